"""The model and its files: the input features, the STTransformer, the checkpoint format
(written and read here), its model card, checkpoints on the Hugging Face Hub, and weight
transfer for fine-tuning. Imports core, config and data (for the layouts)."""
