"""my_methods.py: a distillation method for ltkd-bench, loaded with `plugins: [my_methods]`."""
import torch.nn.functional as F

from methods import Method, as_target, register_method
from methods.kd import kd_loss


@register_method("my_kd")
class MyKD(Method):
    """KD from a teacher whose logits are partly debiased by the training class prior."""

    hparams = {"temperature": 4.0, "tau": 0.5}  # name -> default, overridable in the suite YAML
    summary = "KD with a prior-adjusted teacher (example plugin)"

    def forward(self, student, teacher, target, epoch):
        # student, teacher: Outputs(logits (B, C), features (B, D)); return weighted 0-dim loss terms
        z_t = as_target(self.checked_teacher(teacher).logits) - self.tau * self.log_prior  # a constant target
        return {
            "ce": F.cross_entropy(student.logits.float(), target),
            "kd": kd_loss(student.logits, z_t, self.temperature),
        }
