"""FedMAP: personalised federated learning by MAP estimation under a learned global prior.

A pure library (PyTorch and NumPy only): the local MAP objective and omega_k (``objective``), the
server's aggregation (``aggregation``), FedMAP and its baselines behind one Protocol
(``algorithms``), the appendix B.1 data generator (``synthetic``), and an in-process simulator
(``simulator``) with its command-line front end (``cli``).
"""
