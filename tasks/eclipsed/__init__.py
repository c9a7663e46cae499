"""eCLIPsed stages: the face part segmenter, the style-based generator, the direction table."""
