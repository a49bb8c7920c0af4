"""Label-free hyperparameter search (`python -m trainers.tune`): a method's declared search
space (`space`), objectives computed from images and the trained model only (`objectives`),
and the keras-tuner study whose trials are ordinary run directories (`study`, which imports
keras-tuner)."""
