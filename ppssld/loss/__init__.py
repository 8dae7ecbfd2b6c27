"""Floor 2: losses (divergences, cross-entropies) and their combination from config.

Importing this package registers every loss in :data:`ppssld.utils.registry.LOSSES`.
"""
from ppssld.loss import functional
from ppssld.loss import losses
from ppssld.loss import afd_loss, feature_losses, googlenet, kd_functional, kd_losses, multilabel
from ppssld.loss.combined import (CombinedLoss, build_loss, check_mixed_label_support, compared_logits,
                                  validate_loss_config)
from ppssld.loss.mixed import MixedLabels, mixed_label_ce
from ppssld.loss.multilabel import DistillationMultiLabelLoss, MultiLabelLoss
from ppssld.loss.losses import (CELoss, ConfigLoss, DistillationCELoss, DistillationDMLLoss,
                                DistillationGTCELoss, JSDivLoss, KLDivLoss, PairLoss, SymmetricKLLoss)

__all__ = ["functional", "losses", "multilabel", "MultiLabelLoss", "DistillationMultiLabelLoss", "CombinedLoss",
           "build_loss", "check_mixed_label_support", "compared_logits", "validate_loss_config", "MixedLabels", "mixed_label_ce",
           "CELoss",
           "ConfigLoss", "DistillationCELoss", "DistillationDMLLoss", "DistillationGTCELoss",
           "JSDivLoss", "KLDivLoss", "PairLoss", "SymmetricKLLoss"]
