"""Applications built from the library's floors: the SSLD main job (``ssld/``) and PaddleClas's search (``search``)."""
