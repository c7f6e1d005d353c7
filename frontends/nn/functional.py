"""torch.nn.functional for graphc: activations, losses and layers as compositions of primitives."""
