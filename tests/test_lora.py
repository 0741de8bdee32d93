"""LoRA through peft: only adapters train, exact resume, a PEFT adapter the HF export loads,
merged weights in final_model/, the config's `lora:` section, and merging an adapter folder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from _train_helpers import make_cfg, write_chats

from aethermind.artifacts import checkpoint as ckpt
from aethermind.artifacts.exported import ExportMeta
from aethermind.artifacts.loading import load_model
from aethermind.export.cli import export_model
from aethermind.export.cli import main as export_main
from aethermind.export.hf import write_hf_dir
from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.training import lora, plan, train
from aethermind.training.config import ConfigError, LoraSettings, TrainConfig, load_config

SETTINGS = dict(r=4, alpha=8.0, dropout=0.0, targets=("q_proj", "v_proj", "o_proj",
                                                      "gate_proj", "down_proj"))


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_tokenizer_dir):
    """A tiny model trained a few steps (the frozen base) and the data to adapt it on."""
    root = tmp_path_factory.mktemp("lora_base")
    assets = SimpleNamespace(tok=str(tiny_tokenizer_dir), cache=str(root / "cache"),
                             train=str(write_chats(root / "train.jsonl", 96, seed=0)))
    train.train(make_cfg(assets, root / "run", max_steps=8))
    return SimpleNamespace(assets=assets, final=root / "run" / "final_model")


def lora_cfg(base, out: Path, **overrides):
    return make_cfg(base.assets, out, init_from=str(base.final), learning_rate=1e-2,
                    lora=LoraSettings(**SETTINGS), **overrides)


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_run")
    result = train.train(lora_cfg(base, out, max_steps=6, checkpoint_every=3))
    assert result["status"] == "completed"
    return out


def test_adapters_leave_the_output_unchanged_until_trained(tiny_config):
    model = Forge1Model(tiny_config).eval()
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 12))
    before = model(tokens)
    lora.add_adapters(model, LoraSettings(**SETTINGS))
    assert torch.allclose(model(tokens), before, atol=1e-5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)


def test_merge_equals_the_adapted_model(tiny_config):
    model = Forge1Model(tiny_config)
    lora.add_adapters(model, LoraSettings(**SETTINGS))
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.05)  # B starts at zero: make the adapters do something
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 12))
    merged = Forge1Model(tiny_config)
    merged.load_state_dict(lora.merge(lora.base_state_dict(model), tiny_config,
                                      *lora.adapter_tensors(model)))
    assert torch.allclose(merged.eval()(tokens), model.eval()(tokens), atol=1e-5)


def test_only_adapters_train_and_final_model_holds_the_merged_weights(base, lora_run):
    start = load_model(base.final)[0].state_dict()
    final, _ = load_model(lora_run / "final_model")
    changed = [k for k, v in final.state_dict().items() if not torch.equal(v, start[k])]
    # Merged: exactly the targeted projections moved; norms and embeddings are the base's.
    assert changed and all(k.endswith(("attn.wqkv.weight", "attn.wo.weight",
                                       "mlp.w_gate_up.weight", "mlp.w_down.weight"))
                           for k in changed)
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(lora_run / "checkpoints")[-1])
    assert state["model"] and all(".lora_" in k for k in state["model"])  # adapters only
    assert (lora_run / "adapter" / "adapter_config.json").is_file()
    assert (lora_run / "adapter" / "adapter_model.safetensors").is_file()


def test_the_adapter_loads_onto_the_hf_export_with_peft(base, lora_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model, tok = load_model(base.final)
    hf_dir = write_hf_dir(model, tok, ExportMeta.of(model, tok), tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()
    merged, _ = load_model(lora_run / "final_model")
    tokens = torch.randint(0, merged.config.vocab_size, (2, 16))
    with torch.no_grad():
        plain = hf(input_ids=tokens).logits
        adapted = peft.PeftModel.from_pretrained(hf, lora_run / "adapter").eval()  # in place
        theirs = adapted(input_ids=tokens).logits
        ours = merged(tokens)
    assert torch.allclose(theirs, ours, atol=1e-4)
    assert not torch.allclose(plain, ours, atol=1e-4)  # the adapters do matter


def test_lora_resume_gives_the_same_losses(base, tmp_path):
    straight = train.train(lora_cfg(base, tmp_path / "a", max_steps=6))
    cfg = lora_cfg(base, tmp_path / "b", max_steps=6, checkpoint_every=3)
    first = train.train(cfg, stop_after=3)
    second = train.train(cfg, resume=True)
    assert second["status"] == "completed"
    assert first["losses"] + second["losses"] == pytest.approx(straight["losses"], abs=1e-6)


def test_resume_with_other_lora_settings_is_refused(base, tmp_path):
    cfg = lora_cfg(base, tmp_path, max_steps=2, checkpoint_every=1)
    train.train(cfg, stop_after=1)
    other = cfg.replace(lora=LoraSettings(**{**SETTINGS, "r": 8}))
    with pytest.raises(train.TrainingError, match="trained with lora"):
        train.train(other, resume=True)


def test_merging_an_adapter_folder_equals_the_merged_final_model(base, lora_run):
    model, _ = load_model(base.final)
    merged = lora.merge(model.state_dict(), model.config, *lora.read_adapter(lora_run /
                                                                               "adapter"))
    final = load_model(lora_run / "final_model")[0].state_dict()
    assert all(torch.allclose(merged[k], final[k], atol=1e-6) for k in final)


def test_an_adapter_folder_that_cannot_merge_is_one_line(lora_run, tmp_path):
    with pytest.raises(ValueError, match="expected a PEFT LoRA folder"):
        lora.read_adapter(tmp_path)
    bad = tmp_path / "dora"
    bad.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (bad / name).write_bytes((lora_run / "adapter" / name).read_bytes())
    config = json.loads((bad / "adapter_config.json").read_text())
    config["use_dora"] = True
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="use_dora=True cannot be merged"):
        lora.read_adapter(bad)


def test_lora_parameters_stay_under_two_percent_of_nano():
    with torch.device("meta"):
        model = Forge1Model(Forge1Config.nano())
        total = model.num_parameters()
        lora.add_adapters(model, LoraSettings())  # the defaults: r 8 on all seven projections
    assert lora.trainable_count(model) / total < 0.02


def test_lora_config_section_is_strict_and_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("init_from: x\nlora: {r: 16, targets: [q_proj, v_proj]}\n")
    cfg = load_config(path, ["lora.alpha=32"])
    assert cfg.lora == LoraSettings(r=16, alpha=32.0, targets=("q_proj", "v_proj"))
    assert load_config(path, ["lora=null"]).lora is None
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict()))["lora"]["targets"] == ["q_proj",
                                                                                "v_proj"]
    for bad, pattern in [("lora.rank=4", "unknown key 'rank' of lora"),
                         ("lora.r=0", "'lora.r' has value 0"),
                         ("lora.targets=q_proj,wqkv", "'lora.targets'"),
                         ("lora.dropout=1", "'lora.dropout' has value 1.0")]:
        with pytest.raises(ConfigError, match=pattern):
            load_config(path, [bad])
    path.write_text("init_from: x\nlora: {r: 4, rnak: 2}\n")
    with pytest.raises(ConfigError, match="lora: unknown key 'rnak'"):
        load_config(path)
    with pytest.raises(ConfigError, match="init_from set too"):
        load_config(None, ["lora.r=4"])


def test_export_with_the_adapter_writes_the_merged_model(base, lora_run, tmp_path, capsys):
    written = export_model(base.final, formats=("pytorch",), output=tmp_path / "out",
                           adapter=lora_run / "adapter")
    exported = load_model(next(p for p in written if p.suffix == ".pt"))[0].state_dict()
    final = load_model(lora_run / "final_model")[0].state_dict()
    assert all(torch.allclose(exported[k], final[k], atol=1e-6) for k in final)
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--model", str(base.final), "--adapter", str(tmp_path),
                     "--output", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "expected a PEFT LoRA folder" in capsys.readouterr().err


def test_the_planner_counts_gradients_and_states_of_the_adapters_only():
    cfg = Forge1Config.nano()
    full = plan.estimate(cfg, TrainConfig(variant="nano"))
    settings = LoraSettings(dropout=0.0)  # dropout saves a masked copy of each input: more
    adapted = plan.estimate(cfg, TrainConfig(variant="nano", init_from="x", lora=settings))
    n = plan.count_lora(cfg, settings)
    assert adapted.gradients == 4 * n and adapted.optimizer == 8 * n
    assert adapted.weights == full.weights + 4 * n
    assert adapted.total(False) < full.total(False) - 10 * full.params  # 12 B/param saved
    dropped = plan.estimate(cfg, TrainConfig(variant="nano", init_from="x",
                                             lora=LoraSettings()))
    assert dropped.activations > adapted.activations
