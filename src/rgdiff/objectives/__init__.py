"""Training objectives.

- `objectives.score_matching`: denoising score matching on the exact conditional score [5.23],
  the t = 0 implicit (Hyvarinen) anchor, the closed-form Hyvarinen couplings.
- `objectives.cnf`: the RG objective [5.22] and reverse KL [5.5] for continuous flows.
"""
