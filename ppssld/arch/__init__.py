"""Floor 2: model zoo access, DistillationModel, strict weight loading."""
