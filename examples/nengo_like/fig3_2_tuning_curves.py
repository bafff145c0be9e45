"""The chapter's Fig. 3.2 ("Spiking neuron models") from the nengo_like target: tuning curves
of RegularSpiking(Tanh), RegularSpiking(Sigmoid), RegularSpiking(RectifiedLinear) and
RegularSpiking(LIFRate) with tau_ref = 2.5 ms (saturation at 400 Hz), measured over a 1 s run
beside the rate curves (nengo 4.1 neuron semantics).

    python examples/nengo_like/fig3_2_tuning_curves.py [OUT.png]    (default: fig3_2.png)
"""

from __future__ import annotations

from hwmap_nengo_like.pictures import main

if __name__ == "__main__":
    main()
