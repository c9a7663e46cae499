"""The params.yaml sections of each method. Every stage validates the whole params.yaml before it
starts (a typo in a later stage's section must not surface an hour into the pipeline), so the
schemas are part of the shared runtime: editing one re-runs every stage.
"""
