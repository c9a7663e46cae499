"""Diffusion personalization: the tiny model zoo, base pretraining, DreamBooth / LoRA /
Textual Inversion / Custom Diffusion fine-tuning, and the diffusers formats they export."""
