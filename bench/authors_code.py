"""What the authors' public code does, read commit by commit (facts only, no code copied):
the section of docs/results/synthetic.md that ``bench/paper_report.py`` writes after its tables.
"""

AUTHORS_CODE = """\
## What the authors' code does (CambridgeCIA/FedMAP, branches Gaussian-Prior and main)

Read with `git show` at each commit; facts only, no code copied. `fedmap/protocols.py` cites the
file behind every number of the protocol.

- **Budgets.** The federated methods get `num_rounds: 20` x `epochs: 50` (`config/config.yaml`,
  2cb8dee; kept by 3829d55 "updated for ICLR", which also lowers Adam's lr from 1e-3 to 1e-4 in
  `src/utils/train_helper.py`). f01521c resets the file to a 3-client, 3-round, 1-epoch smoke test.
  Individual first runs at f01521c (`src/simulation/individual.py`): `epochs: 10`
  (`config/envs/individual.yaml`) of one Adam at lr 1e-4, scored every fourth epoch (the last
  score is after the ninth). No commit has both the 20 x 50 federated budget and an Individual
  runner: 3829d55 has no Individual path, f01521c has no 20 x 50 budget. arXiv v1 (2405.19000,
  May 2024) is as old as the first commits, 0c80483 and 242a739 (27-28 May), and neither runs:
  their `simulation.py` imports modules they do not contain (`utils` and `dataset`; `client` and
  `strategies`). The first runnable commit, 2cb8dee, is of 7 June, and FedMAP itself first
  trains at f01521c, 15 October (below), so the paper's tables came from code the repository
  does not hold.
- **Metric.** `test` returns `balanced_accuracy_score` (from 2cb8dee), which is why label-skew
  sites with 85% class 0 can score "below" their majority rate.
- **Generator.** `var_noise: 9.0` and `n_datapoints: 12500` over 10 sites (1,250 rows each) in
  `config/datasets/synthetic.yaml` at every commit; only balanced, equal-size sites are
  configured. The generator draws from an unseeded `np.random`. At 2cb8dee-3829d55 the CSVs are
  written only when missing, so later runs reuse them; from f01521c `simulation.py` redraws them
  on every run, i.e. for every method.
- **Aggregation.** FedMAP's `aggregate_fit` calls Flower's `aggregate` on `num_examples` at every
  commit: sample-count weights. The omega each site computes (`calculate_contribution`) is sent as
  a metric and never read.
- **Which layers the prior covers.** At 0c80483 each round restarts a site from gamma except its
  first layer, which it copies back from its previous model (`replace_linear_layer`), and the
  Gaussian penalty still covers every layer, the first included. From 2cb8dee on that copy is
  gone: a site resumes its whole previous model and `MAPLoss` penalises every parameter,
  `sum ||theta - gamma||^2 / (2 * 15)`. No commit leaves the first layer unpenalised.
- **FedProx.** `proximal_mu` is 2.0 at 2cb8dee-3829d55 and 5.0 at f01521c, but only 3829d55 adds
  the proximal term to `train`; at 2cb8dee FedProx sites run FedAvg's fit (`fit_fedavg`).
- **FedBN.** `set_params_partial` keeps local the keys containing `bn`, and the MLP
  (`src/models/map_mlp.py`) has none: their FedBN averages every layer and scores the global
  model, i.e. it is FedAvg. Our FedBN (converged protocol) has BatchNorm layers and keeps them.
- **FedMAP first runs at f01521c.** At 2cb8dee and 3829d55, `train` calls
  `criterion(outputs, batch_label, net)` and `MAPLoss.forward` iterates
  `zip(model_parameters, self.gamma)` over the two models themselves; a plain `nn.Module` (their
  `MLP`) is not iterable, so FedMAP's first batch raises a TypeError. f01521c (15 October 2024)
  zips `.parameters()` and is the first commit at which FedMAP trains. (Earlier notes here said
  a config bug made FedMAP train `CrossEntropyLoss` at 2cb8dee. That was wrong. `simulation.py`
  tests `cfg.datasets == 'synthetic'`, a config node against a string, so `is_multi_class`
  stays True, but `fit_fedmap` never passes it to `train`, whose default is BCE. The flag only
  changes the validation loss, never the balanced accuracy. f01521c tests `cfg.datasets.name`.)
  We train FedMAP with BCE, as the paper says and f01521c does.
- **Branch `main` is the later method, not v1's.** Its six commits (d073b3f-eac722a, 13 November
  2025) continue from f01521c and replace the Gaussian prior with the later version's ICNN prior
  (`src/loss_modules/map.py`, `ICNNPrior`), run as a `flwr run` app. Its one synthetic task,
  `example`, ships its own CSVs (`datasets/example`: 45 clients, 35 of them with training rows)
  with 100 rounds x 10 local epochs (`config/task/example.toml`; `src/tasks/example.py`
  hard-codes Adam at lr 1e-4). It has no feature-, quantity- or label-skew scenario, and its
  server runs FedMAP alone (`src/server/server_app.py`), so neither branch holds v1's experiment.
"""
