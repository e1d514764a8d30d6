"""ULMFiT for the dynamic route: an optimizer to hand to ``hub.Trainer`` (SPEC section 6).

The three mechanisms, as the static :class:`..finetune.strategy.ULMFiTStrategy` realises them,
carried by the optimizer alone (``hub.Trainer`` calls nothing else per batch or epoch):

* slanted triangular learning rate: the optimizer's ``learning_rate`` is a
  :class:`..finetune.strategy.SlantedTriangularLR`, which ``hub.Trainer`` steps after every batch;
* discriminative rates: one parameter group per layer of the map, with
  ``learning_rate = factor ** -(max_layer - layer)`` (Paddle multiplies the scheduled rate by it);
* gradual unfreezing: the same scheduler, when its step count enters epoch ``e`` (counted from
  0, ``steps_per_epoch`` batches each), sets ``stop_gradient`` on the parameters of layers below
  ``max_layer - e``. Frozen parameters get no gradient, so the optimizer leaves them untouched.

Parameters outside the map (none, with a task model's ``get_params_layer()``, which places the
task head above the top encoder layer) train from the start at the full rate.
"""

import paddle

from ..feeder import check_int
from ..finetune.strategy import SlantedTriangularLR

__all__ = ["ulmfit_optimizer", "UnfreezingSlantedTriangularLR"]


class UnfreezingSlantedTriangularLR(SlantedTriangularLR):
    """:class:`SlantedTriangularLR` that also applies gradual unfreezing to ``layers`` at epoch boundaries.

    ``layers``: ``{parameter: layer}`` (parameter objects); in epoch ``e`` those with
    ``layer >= max_layer - e`` train. ``unfreeze=False`` keeps every parameter trainable.
    Resuming (``set_state_dict``, e.g. through the optimizer's) restores the epoch's frozen set.
    """

    def __init__(self, layers, steps_per_epoch, learning_rate, num_train_steps, cut_fraction=0.1, ratio=32,
                 unfreeze=True):
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, 1)
        self._layers = dict(layers) if unfreeze else {}
        self._max_layer = max(self._layers.values(), default=0)
        super().__init__(learning_rate, num_train_steps, cut_fraction, ratio)

    @property
    def epoch(self):
        """The training epoch (from 0) that the current step belongs to."""
        return max(self.last_epoch, 0) // self.steps_per_epoch

    def _apply_unfreezing(self):
        lowest = self._max_layer - self.epoch
        for param, layer in self._layers.items():
            param.stop_gradient = layer < lowest

    def step(self, epoch=None):
        super().step(epoch)
        self._apply_unfreezing()

    def set_state_dict(self, state_dict):
        super().set_state_dict(state_dict)
        self._apply_unfreezing()


def ulmfit_optimizer(model, num_train_steps, steps_per_epoch, learning_rate=1e-4, optimizer_class=None,
                     cut_fraction=0.1, ratio=32, factor=2.6, discriminative=True, unfreeze=True, params_layer=None,
                     **optimizer_options):
    """A Paddle optimizer over ``model``'s trainable parameters with ULMFiT's three mechanisms.

    ``model``: a task model (or any layer with ``params_layer`` given); ``params_layer``: ``{parameter
    name: layer}``, by default ``model.get_params_layer()``. ``num_train_steps``: epochs x batches per
    epoch (``steps_per_epoch``, i.e. ``len(DistributedBatchSampler)``, per process). ``optimizer_class``:
    e.g. ``paddle.optimizer.AdamW`` (the default) or ``SGD``, given ``**optimizer_options``.
    ``discriminative=False`` / ``unfreeze=False`` turn those mechanisms off; ``ratio=1`` makes the rate
    constant.
    """
    optimizer_class = optimizer_class or paddle.optimizer.AdamW
    layer_map = dict(model.get_params_layer() if params_layer is None else params_layer)
    params = [p for p in model.parameters() if p.trainable]
    unknown = sorted(set(layer_map) - {p.name for p in params})
    if unknown:
        raise ValueError(f"params_layer names parameters this model has not (or not trainable): {unknown[:5]}")
    layers = {p: layer_map[p.name] for p in params if p.name in layer_map}
    max_layer = max(layers.values(), default=0)
    groups = {}
    for param in params:
        scale = factor ** -(max_layer - layers[param]) if discriminative and param in layers else 1.0
        groups.setdefault(scale, []).append(param)
    scheduler = UnfreezingSlantedTriangularLR(layers, steps_per_epoch, learning_rate, num_train_steps, cut_fraction,
                                              ratio, unfreeze=unfreeze)
    parameters = [{"params": group, "learning_rate": scale} for scale, group in groups.items()]
    return optimizer_class(learning_rate=scheduler, parameters=parameters, **optimizer_options)
