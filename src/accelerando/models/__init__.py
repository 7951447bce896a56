"""Model families, one per module. nn.Modules only: no training code, no pipelines."""
