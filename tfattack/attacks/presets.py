"""Named presets: data, one `AttackConfig` of components per published method, with the source of each default.

Common defaults unless stated: eps = 16/255, T = 10 steps, alpha = eps/T, mu = 1.0, the setting
of the MI/DI/TI/SI-NI/VT/Admix papers on the NIPS'17 data (images in [0, 1] here; those codes
work in [-1, 1] with eps = 2*16/255, the same budget).
"""

from __future__ import annotations


from tfattack.attacks.config import AttackConfig
from tfattack.attacks.ensemble import CWA, SMER, SVRE, AdaEA
from tfattack.attacks.estimators import EMI, GRA, L2T, MEF, MIG, OPS, PGN, RAP, VT
from tfattack.attacks.filters import TI
from tfattack.attacks.objectives import BFA, CE, FIA, ILA, NAA, RPA, SU, Logit, LogitMargin, PoTrip, Prob
from tfattack.attacks.surrogate import BPA, CFM, ILPD, SGM, Ghost, LinBP
from tfattack.attacks.transforms import BSR, DI, SI, SIA, SSA, Admix, DeCoWA, LocalCrop, MaskBlock
from tfattack.attacks.updates import GIMI, MI, NI, GRAUpdate

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
    "logit_margin": (dict(objective=LogitMargin(), transforms=(DI(0.7),), **_TARGETED_300),
                     "Logit margin: targeted cross-entropy of the logits divided by the (constant) gap between the "
                     "top two, in the TI-DI-MI setting of Zhao et al. (300 steps of 2/255, DI p=0.7, 5x5 TI) as in "
                     "Weng et al. TIFS 2023 and TransferAttack."),
    "cfm": (dict(objective=Logit(), transforms=(DI(1.0, resize_ratio=340 / 299),), forward=(CFM(),), **_TARGETED_300),
            "CFM: each forward pass mixes, at each convolution at most a quarter of the input wide and each linear "
            "layer with probability 0.1, U[0, 0.75] per channel of a shuffled clean image's output into every "
            "image's; targeted logit loss, DI p=1 on a 340/299 canvas, 5x5 TI, mu=1, 300 steps of 2/255 (Byun et al. "
            "CVPR 2023, authors' settings; their random erasing is left out, as in TransferAttack)."),
    "su": (dict(objective=SU(), transforms=(LocalCrop(), DI(0.7)), **_TARGETED_300),
           "SU (self-universality): each step the adversarial image and a random crop (10 % of the area) of the clean "
           "image carrying the same perturbation go through one DI (p=0.7); the target's logit on both plus 0.001 x "
           "the cosine of their features at the paper's layer (Inception-v3 Mixed_6e, ResNets block3); 300 steps of "
           "2/255, 5x5 TI, mu=1 (Wei et al. CVPR 2023, TransferAttack's settings). Needs named feature taps."),
    # Modern input transformations (MI-FGSM base, mu = 1.0, eps 16/255, T = 10, as in the papers' tables).
    "bsr": (dict(transforms=(BSR(),), **_MI),
            "BSR: 20 copies of 2x2 blocks shuffled and each rotated within +-24 degrees, MI-FGSM (Wang et al. CVPR "
            "2024, authors' code)."),
    "bsr_ti_dim": (dict(transforms=(BSR(), DI(0.5)), **_MI, **_TI7),
                   "BSR with DI (p=0.5) and 7x7 TI on MI-FGSM, the combination the BSR paper reports with DIM/TIM."),
    "sia": (dict(transforms=(SIA(),), **_MI),
            "SIA: 20 copies of 3x3 blocks, each block transformed by one of ten random operations, MI-FGSM (Wang et "
            "al. ICCV 2023, authors' code)."),
    "ssa": (dict(transforms=(SSA(),), **_MI),
            "SSA: 20 spectrum-simulated copies, rho=0.5, sigma=16/255, MI-FGSM (Long et al. ECCV 2022, as "
            "TransferAttack runs it; the authors' S2I-FGSM is update=sign)."),
    "ssa_ti_dim": (dict(transforms=(SSA(), DI(0.5)), **_MI, **_TI7),
                   "S2I-TI-DIM: SSA with DI (p=0.5) and 7x7 TI on MI-FGSM (Long et al. ECCV 2022)."),
    "maskblock": (dict(transforms=(MaskBlock(),), **_MI),
                  "MaskBlock: one copy per cell of a 4x4 grid with that cell zeroed, MI-FGSM (Fan et al. 2022; "
                  "TransferAttack's 56-pixel patches of a 224 image)."),
    "decowa": (dict(transforms=(DeCoWA(),), **_MI),
               "DeCoWA: 20 thin-plate-spline warps whose control-point noise first takes one step down the "
               "objective, MI-FGSM (Lin et al. AAAI 2024, TransferAttack's code)."),
    # Modern gradient methods.
    "l2t": (dict(estimators=(L2T(),), **_MI),
            "L2T: 3 trajectories of 2 ops per step drawn from a distribution over the authors' 98-op pool, learned "
            "during the attack (lr 0.01) by the drawn copies' loss; 29 model inputs per trajectory, MI-FGSM (Zhu et "
            "al. CVPR 2024, authors' code); 87 gradients per iteration: set copies_per_pass on real models (29: "
            "one trajectory at a time)."),
    "ops": (dict(estimators=(OPS(),), **_MI),
            "OPS: the plain gradient plus 30 neighbours (a pool of 6x30 noises drawn once, radii 2 eps x 0.25..1.5) x "
            "30 random composites of 2-4 of 31 basic operators, MI-FGSM (Guo et al. CVPR 2025, authors' code; "
            "TransferAttack's official 30x30); 901 gradients per iteration: set copies_per_pass on real models."),
    "pgn": (dict(estimators=(PGN(),), **_MI),
            "PGN: the mean over 20 neighbours within 3 eps of (1-delta) g + delta g at the look-ahead, delta=0.5, "
            "MI-FGSM (Ge et al. NeurIPS 2023, authors' code); 40 gradients per iteration."),
    "pgn_di": (dict(estimators=(PGN(),), transforms=_DI, **_MI),
               "PGN with DI (p=0.5; each neighbour draws its own resize and pad)."),
    "gra": (dict(estimators=(GRA(),), update=GRAUpdate()),
            "GRA: gradient relevance (cosine of the gradient and the mean of 20 neighbours within 3.5 eps) and the "
            "decay indicator eta=0.94 on the step (Zhu et al. ICCV 2023, authors' code)."),
    "emi": (dict(estimators=(EMI(),), **_MI),
            "EMI: the gradient averaged over 11 points along the previous average gradient, within +-7 steps "
            "(Wang et al. BMVC 2021, authors' code)."),
    "gimi": (dict(update=GIMI()),
             "GI-MI: 5 pre-steps of 10 alpha pre-converge the momentum, then MI-FGSM from the clean image (Wang et "
             "al. 2022, authors' code)."),
    "gini": (dict(update=GIMI(nesterov=True)), "GI-NI: GI-MI with NI's look-ahead (authors' code)."),
    "mig": (dict(steps=25, estimators=(MIG(),), objective=Prob(), **_MI),
            "MIG: integrated gradients from a black baseline over 20 points, on the softmax probability, 25 steps "
            "of eps/25, mu=1.0 (Ma et al. ICCV 2023; TransferAttack's settings, no authors' code)."),
    "mef": (dict(steps=20, step_size=1.6 / 255, estimators=(MEF(),), update=MI(0.5)),
            "MEF (maximin expected flatness): 20 neighbours within 2 eps with an inner flatness accumulator, outer "
            "momentum 0.5, 20 steps of 1.6/255 (Qiu et al. arXiv 2405.16181, authors' code)."),
    "rap": (dict(steps=400, step_size=2 / 255, estimators=(RAP(),), **_MI),
            "RAP-LS: from iteration 100 of 400 (steps of 2/255), each gradient is taken at x + n, n an 8-step reverse "
            "perturbation within eps that lowers the objective (Qin et al. NeurIPS 2022, authors' code)."),
    "sgm": (dict(backward=(SGM(),), **_MI),
            "SGM: the gradient through each residual branch decays by gamma=0.2 (blocks with a projection shortcut "
            "keep theirs), MI-FGSM mu=1, 10 steps of eps/10 (Wu et al. ICLR 2020; TransferAttack's settings). "
            "Needs residual blocks (ResNets, Inception-ResNet, EfficientNet)."),
    "linbp": (dict(steps=300, step_size=1.6 / 255, backward=(LinBP(),), **_MI),
              "LinBP: after block3/unit_1 (ResNets) the residual branches back-propagate with linear ReLUs, each "
              "branch's gradient rescaled to the exact one's norm, MI-FGSM mu=1, 300 steps of 1.6/255 "
              "(Guo et al. NeurIPS 2020; TransferAttack's settings; the authors' PGD also redraws uniform noise "
              "every step, not done here). Needs a slim ResNet."),
    "bpa": (dict(backward=(BPA(),), **_MI),
            "BPA: ReLUs after block3/unit_1 (ResNets; elsewhere see the component) back-propagate t=1 times SiLU's "
            "derivative and max pools a softmax(10 * window), MI-FGSM mu=1, 10 steps (Wang et al. NeurIPS 2023, "
            "authors' code and TransferAttack's settings)."),
    "ghost": (dict(forward=(Ghost(),), **_MI),
              "Ghost networks: every forward pass scales each residual skip connection per channel by U[1-r, 1+r] "
              "(r 0.22 ResNet-50, 0.16 -101, 0.12 -152, 0.08 Inception-ResNet-v2); a network without residual "
              "additions gets dropout of rate L after every unit of its body but the last (L 0.006 Inception-v3, "
              "0.012 Inception-v4; authors' code), MI-FGSM mu=1, 10 steps (Li et al. AAAI 2020; TransferAttack's "
              "MI-FGSM setting)."),
    "fia": (dict(objective=FIA(), **_MI),
            "FIA: maximise -sum(Delta * f_l(x)) with Delta the true-class logit's gradient at the paper's layer "
            "(Inception-v3 Mixed_5b, ResNets block2, VGG-16 conv3_3; see the component) summed over 30 copies with "
            "30 % of pixels dropped, MI-FGSM mu=1, 10 steps (Wang et al. ICCV 2021, authors' code). 30 extra "
            "forward+backward passes per attack call; untargeted."),
    "ila": (dict(objective=ILA()),
            "ILA: MI-FGSM (10 steps of eps/10, mu=1) makes a guide; then 10 I-FGSM steps from the clean image "
            "maximise the projection of the feature change at the layer (FIA's per-family defaults) onto the "
            "guide's (Huang et al. ICCV 2019; TransferAttack's settings). 10 extra passes per attack call."),
    "naa": (dict(objective=NAA(), **_MI),
            "NAA: neuron attributions (f_l(x) - f_l(0)) weighted by 30-step integrated gradients of the true-class "
            "probability, gamma=1, MI-FGSM mu=1, 10 steps (Zhang et al. CVPR 2022, authors' code with its path "
            "noise). 31 extra passes per attack call; untargeted."),
    "rpa": (dict(objective=RPA(), **_MI),
            "RPA: FIA's weighting from 60 copies in which 30 % of the cells (per channel; cell sizes 1, 3, 5, 7 in "
            "turn) are replaced by uniform noise, on the true-class probability; MI-FGSM mu=1, 10 steps (Zhang et "
            "al. IJCAI 2022). 60 extra passes per attack call; untargeted."),
    "ilpd": (dict(steps=100, step_size=1 / 255, forward=(ILPD(),), **_MI),
             "ILPD: at the layer (FIA's per-family defaults: ResNets block2, Inception-v3 Mixed_5b, ...) the forward "
             "pass keeps gamma=0.1 of the change from the clean image plus N(0, 0.05^2) noise, drawn each step; "
             "cross-entropy, MI-FGSM mu=1, 100 steps of 1/255 (Li et al. NeurIPS 2023; TransferAttack's official "
             "arguments). One extra forward pass per step."),
    "bfa": (dict(objective=BFA(), **_MI),
            "BFA: FIA's weighting from 30 images fitted in turn along the cross-entropy's L2-normalised gradient "
            "(x + 28 g), on the true-class logit; MI-FGSM mu=1, 10 steps (Wang et al. Neurocomputing 2024, "
            "TransferAttack's settings). 31 extra passes per attack call; untargeted."),
    # Ensemble strategies: for an Ensemble surrogate (two or more members), MI-FGSM base, 10 steps.
    "svre": (dict(estimators=(SVRE(),), **_MI),
             "SVRE: each step, M = 4K inner steps on one random member's variance-reduced gradient (its gradient "
             "minus its gradient at x_t plus the ensemble's), inner momentum 1; the last inner momentum feeds MI-FGSM "
             "mu=1, 10 steps of eps/10 (Xiong et al. CVPR 2022, authors' code)."),
    "cwa": (dict(step_size=3.2 / 255, estimators=(CWA(),), **_MI),
            "CWA (MI-CWA): a reverse step of eps/15 down the ensemble's gradient, then one step of 250 along the "
            "L2-normalised inner momentum per member; MI-FGSM mu=1 on the resulting change, 10 steps of 3.2/255 "
            "(Chen et al. ICLR 2024, authors' code at eps 16/255)."),
    "adaea": (dict(estimators=(AdaEA(),), update=MI(0.9)),
              "AdaEA: members weighted per image by softmax(10 x how well each one's one-step example fools the "
              "others), pixels where the members' gradients disagree (mean cosine < -0.3) dropped; MI-FGSM mu=0.9, "
              "10 steps of eps/10 (Chen et al. ICCV 2023, authors' code)."),
    "smer": (dict(estimators=(SMER(),), **_MI),
             "SMER: each step, 4 shuffled passes over the members, one inner MI step per member on its logits "
             "scaled by a weight that SGD (lr 0.02, decay 0.002) tunes to keep the weighted ensemble's loss high; "
             "the last inner momentum feeds MI-FGSM mu=1, 10 steps of eps/10 (Tang et al. CVPR 2024, "
             "TransferAttack's code)."),
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
