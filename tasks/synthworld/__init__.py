"""Stages that write SynthWorld: subjects and scenes (synthesize), cloth-changing persons."""
