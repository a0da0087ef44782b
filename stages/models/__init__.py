"""The models, built by name from one registry: AST-tiny of our own, any timm CNN, ImageNet weights."""
