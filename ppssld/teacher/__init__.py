"""The frozen teacher: its forward pass (``frozen``: from a config, weights or an inference model; ``engines`` /
``choose``: in Paddle Inference with oneDNN or in dygraph) and the one sharded, resumable pass over image
chunks that mining and the soft-label cache run (``shards``: rank split, poll loop, folder claim;
``chunk_pass``: the chunk loop)."""
