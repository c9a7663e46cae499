"""SynthWorld's judges: the prompt-accuracy classifier of class noun and scene, trained on real renders."""
