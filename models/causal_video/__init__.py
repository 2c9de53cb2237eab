"""CausalVideoVQ: a video-native tokenizer of causal 3D convolutions that compresses time and space.

The first frame of a clip is coded on its own, so one model tokenizes images (one-frame
clips) and videos. Module names follow taming-transformers' (``encoder.down.{i}.block.{j}``,
``mid.attn_1``, ``quant_conv`` ...), so a 2D Taming checkpoint inflates key by key
(``inflation.inflate_state_dict``).
"""
