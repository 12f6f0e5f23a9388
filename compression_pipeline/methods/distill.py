"""Knowledge distillation: a student from the zoo learns from the parent (KL at temperature T plus cross-entropy).

The same student is also trained without a teacher, from the same initial weights with the same seed, epochs
and optimizer, and both accuracies are recorded (``ablation``): a distillation gain is measured, never assumed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compression_pipeline.methods.registry import MethodConfig, TorchContext, register


class Student(MethodConfig):
    arch: Literal["cnn"] = "cnn"
    width: int = Field(ge=1, le=1024, description="the zoo CNN's width (channels width, 2w, 2w; hidden 8w)")


class Distill(MethodConfig):
    """Train ``student`` against the parent: loss = alpha * T^2 * KL(student/T || parent/T) + (1 - alpha) * CE."""

    student: Student
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    epochs: int = Field(15, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)


@register("distill", Distill, "knowledge distillation into a smaller zoo student, with a no-teacher ablation")("torch")
def distill(module, spec, config: Distill, ctx: TorchContext):
    from compression_pipeline import train, zoo

    s_spec = zoo.cnn_spec(config.student.width, tuple(spec.in_shape[1:]), spec.num_classes)
    module.eval()
    runs = {}
    for label, teacher in (("distilled", module), ("alone", None)):
        student = zoo.build_torch(s_spec, seed=ctx.seed)  # identical initial weights for both runs
        ctx.say(f"distill: training the student {label}")
        history = train.train(student, ctx.splits, ctx.image_shape, config.epochs, config.batch_size, config.lr,
                              ctx.seed, teacher=teacher, temperature=config.temperature, alpha=config.alpha,
                              log=ctx.log)
        acc = train.accuracy(train.predict(student, ctx.splits["X_test"], ctx.image_shape), ctx.splits["y_test"])
        runs[label] = (student, acc, history)
    return runs["distilled"][0], s_spec, result(runs, zoo.count_params(module)[0],
                                                zoo.count_params(runs["distilled"][0])[0], config, ctx.seed, "torch")


def result(runs: dict, teacher_params: int, student_params: int, config: Distill, seed: int, runtime: str) -> dict:
    """The method's facts from ``runs`` ({"distilled" | "alone": (student, accuracy, history)}), either framework."""
    acc, history = runs["distilled"][1], runs["distilled"][2]
    alone_acc = runs["alone"][1]
    ablation = {"distilled_accuracy": acc, "student_alone_accuracy": alone_acc, "gain": acc - alone_acc,
                "runtime": runtime, "epochs": config.epochs, "seed": seed, "alone_history": runs["alone"][2]}
    return {"teacher_params": teacher_params, "student_params": student_params,
            "student_params_ratio": student_params / teacher_params, "ablation": ablation, "history": history,
            "note": f"distilled {acc:.4f} vs the same student trained alone {alone_acc:.4f} "
                    f"({100 * (acc - alone_acc):+.2f} pp, {runtime}, same seed and epochs)"}
