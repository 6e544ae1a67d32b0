"""Output heads of coordinatewise learned optimizers, beyond the paper's linear read-out.

``NominalTerm`` adds a hand-designed optimizer's update to the learned one, with learning rates
that the network modulates per coordinate (a nominal term inside a learned optimizer, as in
Harrison et al., 2022: it keeps the learned optimizer stable and able to take steps in proportion
to the gradient, which a bounded function of log|g| and sign g cannot).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class NominalTerm(nn.Linear):
    """A term linear in k signals s_j (the gradient, a momentum, an RMS-scaled signal, ...),
    each with a per-coordinate learning rate read off the network's hidden state h:

        term = - sum_j exp(a_j h + c_j) s_j

    ``weight`` a: (k, hidden), ``bias`` c: (k,). At the start a = 0 and c_j = log(rates[j]):
    the term is then the hand-designed update - sum_j rates[j] s_j (on Adam's m_hat / sqrt(v_hat),
    Adam) whatever h, and meta-training moves it from there.
    """

    def __init__(self, hidden_size: int, rates: Sequence[float]) -> None:
        # nn.Linear's own initialisation draws from the random stream; it is kept (then replaced
        # by the start) so that a seed gives the weights it always gave, here and after.
        super().__init__(hidden_size, len(rates))
        self.rates = tuple(rates)
        self.start()

    def start(self) -> None:
        """a = 0, c_j = log(rates[j])."""
        with torch.no_grad():
            self.weight.zero_()
            self.bias.copy_(torch.tensor(self.rates).log())

    def forward(self, h: Tensor, signals: Tensor) -> Tensor:
        """h: (hidden, n), signals: (k, n), one coordinate per column -> the term, (n,)."""
        rates = torch.addmm(self.bias.unsqueeze(1), self.weight, h).exp()
        return -(rates * signals).sum(0)
