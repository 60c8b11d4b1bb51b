"""What a hospital runs on its own machine: validate, train, evaluate, fine-tune, score."""
