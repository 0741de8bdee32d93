"""TRL's SFTTrainer with `assistant_only_loss=True` on the exported HF folder: `make test-interop`.

The folder's chat template carries {% generation %} markers (`chat_template.HF_CHAT_TEMPLATE`);
TRL turns them into labels. They must be exactly our training loss mask (`chat_format.encode`,
what `data.pack` writes), and a few CPU steps must run.
"""

from __future__ import annotations

import math

import pytest
from _infer_helpers import CONVERSATIONS

from aethermind.export.cli import export_model
from aethermind.text import chat_format as cf
from aethermind.text.chat_template import conversation_messages
from aethermind.text.tokenizer import Forge1Tokenizer

pytestmark = pytest.mark.interop

# Multi-turn, with and without thinking, a custom system prompt: every masked/unmasked edge.
CONVS = [*CONVERSATIONS,
         cf.Conversation(turns=[CONVERSATIONS[0].turns[0], CONVERSATIONS[1].turns[0],
                                CONVERSATIONS[3].turns[0]], system="Be brief.")]


def test_trl_assistant_only_loss_trains_on_exactly_our_loss_mask(export_run_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    trl = pytest.importorskip("trl")
    (hf_dir,) = export_model(export_run_dir, formats=("hf",), output=tmp_path / "exports")
    tok = Forge1Tokenizer(hf_dir)
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    data = datasets.Dataset.from_list([{"messages": conversation_messages(c)} for c in CONVS])
    args = trl.SFTConfig(output_dir=str(tmp_path / "trl"), assistant_only_loss=True,
                         max_steps=3, per_device_train_batch_size=2, learning_rate=1e-3,
                         logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                         max_length=None, dataset_num_proc=None, seed=0)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=hf_tok)
    for row, conv in zip(trainer.train_dataset, CONVS, strict=True):
        ids, mask = cf.encode(conv, tok)
        assert row["input_ids"] == ids
        assert row["labels"] == [i if m else -100 for i, m in zip(ids, mask, strict=True)]
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
