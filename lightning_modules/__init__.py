"""The science of subjectlab: networks, LightningModules, samplers, losses and metrics, per method."""
