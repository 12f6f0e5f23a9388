"""Knowledge distillation: a student (from the zoo, or a builder the user names) learns from the parent (KL at
temperature T plus cross-entropy), in the parent's framework.

The same student is also trained without a teacher, from the same initial weights with the same seed, epochs
and optimizer, and both accuracies are recorded (``ablation``): a distillation gain is measured, never assumed.
Written once for every framework on its adapter.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from compression_pipeline.frameworks.base import Fit
from compression_pipeline.methods.registry import Context, MethodConfig, register
from compression_pipeline.types import ImportModel, ModelSource


class Distill(MethodConfig):
    """Train ``student`` against the parent: loss = alpha * T^2 * KL(student/T || parent/T) + (1 - alpha) * CE."""

    student: ModelSource = Field(description="a model source: {arch: cnn, width: 16} (the zoo) or {source: "
                                 "import, builder: ..., framework: ...}")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    epochs: int = Field(15, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _trainable_student(self):
        if isinstance(self.student, ImportModel) and self.student.weights:
            raise ValueError("the student is trained here (twice: distilled and alone, from the same initial "
                             "weights): give it no 'weights'")
        return self


def distill(model, config: Distill, ctx: Context):
    fw = ctx.framework
    if isinstance(config.student, ImportModel) and config.student.framework != fw.name:
        raise ValueError(f"distill: the student is a {config.student.framework} model, the parent (the teacher) a "
                         f"{fw.name} one: a student is trained in its teacher's framework")
    initial = fw.build(config.student, ctx.spec, seed=ctx.seed, data_root=ctx.data_root)
    fit = Fit(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=ctx.seed,
              temperature=config.temperature, alpha=config.alpha, setup=ctx.training)
    runs = {}
    for label, teacher in (("distilled", model), ("alone", None)):
        student = fw.copy(initial)  # identical initial weights for both runs
        ctx.say(f"distill: training the student {label}")
        history = fw.fit(student, ctx.splits, ctx.spec, fit, teacher=teacher, log=ctx.log)
        runs[label] = (student, ctx.accuracy(student), history)
    student = runs["distilled"][0]
    return student, result(runs, fw.count_params(model)[0], fw.count_params(student)[0], config, ctx.seed, fw.name)


register("distill", Distill, "knowledge distillation into a smaller student, with a no-teacher ablation")(
    "torch")(distill)
register("distill", Distill)("tensorflow")(distill)


def result(runs: dict, teacher_params: int, student_params: int, config: Distill, seed: int, runtime: str) -> dict:
    """The method's facts from ``runs`` ({"distilled" | "alone": (student, accuracy, history)})."""
    acc, history = runs["distilled"][1], runs["distilled"][2]
    alone_acc = runs["alone"][1]
    ablation = {"distilled_accuracy": acc, "student_alone_accuracy": alone_acc, "gain": acc - alone_acc,
                "runtime": runtime, "epochs": config.epochs, "seed": seed, "alone_history": list(runs["alone"][2])}
    # How the distilled student (the model kept) was trained; the student trained alone ran the same way.
    training = getattr(history, "training", None)
    return {"teacher_params": teacher_params, "student_params": student_params, "training": training,
            "student_params_ratio": student_params / teacher_params, "ablation": ablation, "history": list(history),
            "note": f"distilled {acc:.4f} vs the same student trained alone {alone_acc:.4f} "
                    f"({100 * (acc - alone_acc):+.2f} pp, {runtime}, same seed and epochs)"}
