"""eCLIPsed: CLIP-guided local latent directions (LELSD + CLIP) for a style-based GAN."""
