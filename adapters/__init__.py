"""Scene adapters for idcode terminals (installed as ``idcode_adapters``).

One module per scene, each defining ``Adapter``, a ``SceneAdapter`` (see ``idcode.scenes``):
``community`` (residential community gates and visitor passes), ``parking`` (car park
barriers), ``tourism`` (scenic-spot turnstiles), ``eldercare`` (canteen meal subsidy and
home-care visits), ``hospital`` (self-service kiosks recognising linked patients),
``merchant`` (shop tills granting resident, senior and programme discounts),
``employment`` (check-in at the stands of a job fair, counted per stand), ``transport``
(bus validators: fares with concessions, transfers and a daily cap, and the operator's
clearing file) and ``culture`` (a library's, museum's or sports venue's timed-entry gates
and loan desk).
"""

from __future__ import annotations

from idcode.scenes import SceneAdapter, load_adapter


def adapter_for(scene: str) -> type[SceneAdapter]:
    """The adapter class of ``scene``."""
    return load_adapter(scene)
