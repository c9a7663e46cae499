"""MSP-Diffusion stages: A.1 augmentation (with Disen-Mix mixed images) and the A.4 subject segmenter."""
