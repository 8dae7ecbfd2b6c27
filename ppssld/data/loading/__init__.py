"""Samplers (distributed, seeded, resumable) and the Paddle DataLoader built from a config section."""
