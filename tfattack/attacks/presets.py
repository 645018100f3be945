"""Named presets: data, one `AttackConfig` of components per published method, with the source of each default.

Common defaults unless stated: eps = 16/255, T = 10 steps, alpha = eps/T, mu = 1.0, the setting
of the MI/DI/TI/SI-NI/VT/Admix papers on the NIPS'17 data (images in [0, 1] here; those codes
work in [-1, 1] with eps = 2*16/255, the same budget).
"""

from __future__ import annotations

import dataclasses

from tfattack.attacks.config import AttackConfig
from tfattack.attacks.estimators import VT
from tfattack.attacks.filters import TI
from tfattack.attacks.objectives import CE, Logit, PoTrip
from tfattack.attacks.transforms import DI, SI, Admix
from tfattack.attacks.updates import MI, NI

_MI = dict(update=MI(1.0))
_DI = (DI(0.5),)                        # Xie et al. CVPR 2019: p = 0.5, resize in [299, 330)
_TI15 = dict(filters=(TI(15),))         # Dong et al. CVPR 2019 (TI paper and code): 15x15, nsig 3
_TI7 = dict(filters=(TI(7),))           # SI-NI, VT and Admix authors' code: 7x7, nsig 3
_SI = (SI(5),)                          # Lin et al. ICLR 2020: m = 5
_NI = dict(update=NI(1.0))              # Lin et al. ICLR 2020
_VT = dict(estimators=(VT(20, 1.5),))   # Wang & He CVPR 2021: N = 20, beta = 1.5
_ADMIX = (Admix(0.2, 3),)               # Wang et al. ICCV 2021: eta = 0.2, m2 = 3 (with SI m1 = 5)
_TARGETED_300 = dict(steps=300, step_size=2 / 255, filters=(TI(5),), update=MI(1.0))  # Zhao et al. NeurIPS 2021

_PRESETS = {
    "fgsm": (dict(steps=1),
             "FGSM, one step of size eps (Goodfellow et al. ICLR 2015)."),
    "i_fgsm": ({}, "I-FGSM / BIM, T=10, alpha=eps/T (Kurakin et al. ICLR-W 2017; transfer setting of Dong et al. 2018)."),
    "mi_fgsm": (_MI, "MI-FGSM, mu=1.0 (Dong et al. CVPR 2018)."),
    "ni_fgsm": (_NI, "NI-FGSM, Nesterov look-ahead, mu=1.0 (Lin et al. ICLR 2020)."),
    "di_fgsm": (dict(transforms=_DI), "DI2-FGSM, p=0.5 (Xie et al. CVPR 2019)."),
    "di_mi_fgsm": (dict(transforms=_DI, **_MI), "M-DI2-FGSM, p=0.5, mu=1.0 (Xie et al. CVPR 2019)."),
    "ti_fgsm": (_TI15, "TI-FGSM, 15x15 Gaussian kernel, nsig=3 (Dong et al. CVPR 2019)."),
    "ti_mi_fgsm": ({**_TI15, **_MI}, "TI-MI-FGSM, 15x15 kernel, mu=1.0 (Dong et al. CVPR 2019)."),
    "ti_di_mi_fgsm": (dict(transforms=_DI, **_TI15, **_MI), "TI-DIM, 15x15 kernel, p=0.5, mu=1.0 (Dong et al. CVPR 2019)."),
    "si_ni_fgsm": (dict(transforms=_SI, **_NI), "SI-NI-FGSM, m=5 scale copies, mu=1.0 (Lin et al. ICLR 2020)."),
    "si_ni_ti_dim": (dict(transforms=_SI + _DI, **_NI, **_TI7),
                     "SI-NI-TI-DIM, m=5, 7x7 kernel, p=0.5, mu=1.0 (Lin et al. ICLR 2020 and their code)."),
    "vmi_fgsm": ({**_MI, **_VT}, "VMI-FGSM, N=20 neighbours, beta=1.5, mu=1.0 (Wang & He CVPR 2021)."),
    "vni_fgsm": ({**_NI, **_VT}, "VNI-FGSM, Nesterov + variance tuning (Wang & He CVPR 2021); the variance is "
                 "sampled around x_t, not the look-ahead point, as in the authors' code."),
    "admix": (dict(transforms=_ADMIX + _SI, **_MI), "Admix-MI, m1=5 scale copies x m2=3 admixed images, eta=0.2, mu=1.0 (Wang et al. ICCV 2021)."),
    "admix_ti_dim": (dict(transforms=_ADMIX + _SI + _DI, **_MI, **_TI7),
                     "Admix-TI-DIM, Admix with 7x7 TI and DI p=0.5 (Wang et al. ICCV 2021 and their code)."),
    "logit_ti_di_mi_fgsm": (dict(objective=Logit(), transforms=(DI(0.7),), **_TARGETED_300),
                            "Targeted logit loss with TI-DI-MI: 300 steps of 2/255, 5x5 TI kernel, DI p=0.7 "
                            "(Zhao et al. NeurIPS 2021, their code). Their code sums raw gradients in the momentum "
                            "for this loss; here they are L1-normalised like MI-FGSM."),
    "po_trip_ti_di_mi_fgsm": (dict(objective=PoTrip(), transforms=(DI(0.7),), **_TARGETED_300),
                              "Targeted Poincare + triplet loss (Li et al. CVPR 2020, lambda=0.01, gamma=0.007) in "
                              "the TI-DI-MI setting that Zhao et al. NeurIPS 2021 compare it in."),
    # The NIPS 2017 competition baselines (cleverhans dev_toolkit sample attacks, and the MI-FGSM winner).
    "nips17_fgsm": (dict(steps=1, label_source="predicted"),
                    "NIPS'17 sample attack 'fgsm': one eps step of cleverhans FGSM on the model's own clean "
                    "prediction (no labels given). The sample saved PNGs by truncation; quantize() rounds."),
    "nips17_step_target_class": (dict(steps=1, objective=CE(smoothing=0.1, aux_weight=0.4)),
                                 "NIPS'17 sample targeted attack 'step_target_class': one eps step down the "
                                 "target's cross-entropy with label smoothing 0.1, plus 0.4 x the same loss on the "
                                 "aux logits (Inception-v3). Smoothing spreads over 1000 classes here, not 1001."),
    "nips17_iter_target_class": (dict(steps=20, step_size=1 / 255, objective=CE(smoothing=0.1, aux_weight=0.4)),
                                 "NIPS'17 sample targeted attack 'iter_target_class': 20 steps of 1/255 (iter_alpha=1 "
                                 "pixel), cross-entropy with label smoothing 0.1, aux-logits term weight 0.4."),
    "nips17_mi_fgsm": (dict(label_source="predicted", objective=CE(aux_weight=0.4), **_MI),
                       "NIPS'17 non-targeted winner (Dong et al., MI-FGSM): T=10, alpha=eps/T, mu=1.0, labels = the "
                       "model's clean prediction, aux-logits loss weight 0.4. Pass an Ensemble(fuse='logits') for "
                       "the winning ensemble (its aux logits fuse over the members that have them)."),
}

PRESET_DOCS = {name: doc for name, (_, doc) in _PRESETS.items()}
PRESETS = {name: AttackConfig(name=name, **values) for name, (values, _) in _PRESETS.items()}


def get(name: str) -> AttackConfig:
    if name not in PRESETS:
        from tfattack.names import did_you_mean
        raise ValueError(f"unknown attack preset {name!r}{did_you_mean(name, PRESETS)}; valid presets: "
                         f"{', '.join(PRESETS)}")
    return PRESETS[name]
