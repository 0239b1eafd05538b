"""What a training run is asked to do: the strategy and its optimisation settings (saved in config.json)."""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES: tuple[str, ...] = ("frozen", "top-layers", "lora")


@dataclass(frozen=True)
class TrainConfig:
    # frozen: encoders frozen, features cached. top-layers: the top ``text_layers`` text blocks and the
    # CNN head train too. lora: LoRA adapters (peft) on the top ``text_layers`` text blocks.
    strategy: str = "frozen"
    epochs: int = 40
    batch_users: int = 512
    # The item tower runs over the whole catalog once per step whatever the batch, so each user
    # contributes several (history, target) rows per step: more signal for the same compute.
    targets_per_user: int = 4
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_epochs: int = 3
    grad_clip: float = 1.0
    patience: int = 8
    val_fraction: float = 0.1
    # What early stopping watches: "warm" (held-out interactions of known items) or "cold-items"
    # (held-out items never trained on: the cold-item protocol's question).
    val_mode: str = "warm"
    seed: int = 0
    text_layers: int = 1  # top-layers / lora: how many top text blocks train
    lora_rank: int = 8
    encoder_lr: float | None = None  # learning rate of encoder tops; None: 1e-4 (top-layers), 1e-3 (lora)
    label_weight: float = 1.0  # weight of the BCE loss on explicit like/dislike labels, when given
    batch_labels: int = 256  # explicit labels per step
    device: str = "auto"  # auto = CUDA when available
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU; or fp32 / bf16

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is not known; use one of: {', '.join(STRATEGIES)}")
        if self.epochs < 1 or self.batch_users < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_users and lr must be positive")
        if self.text_layers < 1 or self.lora_rank < 1:
            raise ValueError("text_layers and lora_rank must be >= 1")
        if self.val_mode not in ("warm", "cold-items"):
            raise ValueError(f"val_mode {self.val_mode!r}: use warm or cold-items")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision {self.precision!r}: use auto, fp32 or bf16")

    @property
    def tops_lr(self) -> float:
        if self.encoder_lr is not None:
            return self.encoder_lr
        return 1e-3 if self.strategy == "lora" else 1e-4

    def fusion_overrides(self) -> dict[str, object]:
        """What the strategy changes in the model config."""
        if self.strategy == "top-layers":
            return {"text_top_layers": self.text_layers, "image_top": True}
        if self.strategy == "lora":
            return {"text_top_layers": self.text_layers, "lora_rank": self.lora_rank}
        return {}
