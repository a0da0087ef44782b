"""Training: the recipe, batches read from the memmap, augmentation, the loop, checkpoints, convergence."""
