"""Diffusion personalization stages: model zoo, base and CLIP pretraining, class images, fine-tuning."""
