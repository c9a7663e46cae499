"""The stage runtime every method shares: params and profiles, errors, atomic outputs,
MLflow tracking, the Trainer factory and its one `fit`, the stage registry and the CLI."""
