"""Recipe schema, training loop, methods, precision, distillation and checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .methods import METHODS, build_method
from .precision import Precision
from .recipe import Recipe, load_recipe, recipe_from_dict
from .trainer import Trainer, build_model

__all__ = ["METHODS", "Precision", "Recipe", "Trainer", "build_method", "build_model",
           "load_checkpoint", "load_recipe", "recipe_from_dict", "save_checkpoint"]
