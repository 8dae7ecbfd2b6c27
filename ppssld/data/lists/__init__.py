"""PaddleClas label lists: reading, checking and writing ``path label`` files (no paddle import)."""
