"""The lmms-eval plugin end to end: a local task run by `lmms-eval --model fastervlm` answers as our driver does.

lmms-eval needs its own environment on a CPU-only machine (`scripts/make_lmms_env.sh`); without it these
tests skip, unless FASTERVLM_REQUIRE_LMMS=1 (the CI step) makes a missing lmms-eval a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if os.environ.get("FASTERVLM_REQUIRE_LMMS") != "1":
    pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (see scripts/make_lmms_env.sh)")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "assets" / "samples"
QUESTIONS = [
    ("shapes.png", "Is there a circle in the image?", "yes"),
    ("shapes.png", "What colour is the square?", "red"),
    ("stripes.png", "Are the stripes vertical?", "no"),
    ("scene.png", "How many objects are there?", "3"),
    ("stripes.png", "What colour are the stripes?", "blue"),
]
POST_PROMPT = "\nAnswer the question using a single word or phrase."

TASK_YAML = """\
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
task: tiny_vqa
test_split: test
output_type: generate_until
doc_to_visual: !function tiny_vqa_utils.doc_to_visual
doc_to_text: !function tiny_vqa_utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  num_beams: 1
  do_sample: false
process_results: !function tiny_vqa_utils.process_results
metric_list:
  - metric: exact
    aggregation: mean
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: "{post}"
"""

TASK_UTILS = '''
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs):
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', '')}"


def process_results(doc, results):
    return {"exact": float(results[0].strip().lower() == doc["answer"])}
'''


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """A local lmms-eval task over a JSON dataset of the bundled sample images."""
    root = tmp_path_factory.mktemp("lmms_task")
    data = root / "tiny_vqa.jsonl"
    with data.open("w") as f:
        for i, (image, question, answer) in enumerate(QUESTIONS):
            f.write(json.dumps({"question_id": i, "image": str(SAMPLES / image), "question": question,
                                "answer": answer}) + "\n")
    (root / "tiny_vqa.yaml").write_text(TASK_YAML.format(data=data, post=POST_PROMPT.replace("\n", "\\n")))
    (root / "tiny_vqa_utils.py").write_text(TASK_UTILS)
    return root


def _lmms(task_dir: Path, model_args: str, out: Path, batch_size: int = 1) -> list[dict]:
    """Run the lmms-eval CLI on the local task; returns its logged samples in doc order."""
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "fastervlm", "--model_args", model_args,
           "--tasks", "tiny_vqa", "--include_path", str(task_dir), "--batch_size", str(batch_size),
           "--log_samples", "--output_path", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=task_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = sorted(out.rglob("*samples_tiny_vqa*.jsonl"))
    assert files, f"no samples file under {out}: {sorted(p.name for p in out.rglob('*'))}"
    samples = [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]
    return sorted(samples, key=lambda s: s["doc_id"])


def _response(sample: dict) -> str:
    """The answer of a logged sample (lmms-eval logs the filtered response, a string or a one-item list)."""
    resp = sample["filtered_resps"]
    while isinstance(resp, list):
        resp = resp[0]
    return resp


def _driver(tiny_path: str, tmp_path: Path, k: int | None, extra: list[str] = (),
            conv_mode: str | None = "vicuna_v1") -> list[str]:
    """The same questions through `python -m llava.eval.model_vqa_loader`, greedy.

    conv_mode: the plugin's default for LLaVA checkpoints (vicuna_v1, as LLaVA-1.5's eval scripts use);
    None passes no --conv-mode (a processor family then uses its chat template)."""
    questions = tmp_path / "questions.jsonl"
    with questions.open("w") as f:
        for i, (image, question, _) in enumerate(QUESTIONS):
            f.write(json.dumps({"question_id": i, "image": image, "text": question + POST_PROMPT}) + "\n")
    answers = tmp_path / "answers.jsonl"
    from llava.eval.model_vqa_loader import main

    main(["--model-path", tiny_path, "--question-file", str(questions), "--image-folder", str(SAMPLES),
          "--answers-file", str(answers), "--temperature", "0", "--max_new_tokens", "8", "--device", "cpu",
          *(["--conv-mode", conv_mode] if conv_mode else []),
          *(["--visual-token-num", str(k)] if k is not None else []), *extra])
    records = {r["question_id"]: r for r in map(json.loads, answers.read_text().splitlines())}
    return [records[i]["text"] for i in range(len(QUESTIONS))]


@pytest.mark.parametrize("k, method, batch", [(58, "fastervlm", 1), (None, "fastervlm", 2), (29, "visionzip", 3)])
def test_lmms_eval_answers_equal_model_vqa_loader(tiny_path, task_dir, tmp_path, k, method, batch):
    args = f"pretrained={tiny_path},pruning_method={method},device=cpu,dtype=float32"
    if k is not None:
        args += f",visual_token_num={k}"
    samples = _lmms(task_dir, args, tmp_path / "lmms", batch_size=batch)
    expected = _driver(tiny_path, tmp_path, k, ["--pruning-method", method])
    assert [_response(s) for s in samples] == expected
    counts = [s["token_counts"][0] for s in samples]
    assert [c["visual_tokens"] for c in counts] == [576 if k is None else k] * len(QUESTIONS)


def test_llava_next_answers_equal_model_vqa_loader(next_path, task_dir, tmp_path):
    """LLaVA-NeXT (anyres, one budget per image over its base view and grid) through the same runner."""
    args = f"pretrained={next_path},visual_token_num=100,device=cpu,dtype=float32"
    samples = _lmms(task_dir, args, tmp_path / "lmms", batch_size=2)
    assert [_response(s) for s in samples] == _driver(next_path, tmp_path, 100)
    records = {r["question_id"]: r for r in map(json.loads, (tmp_path / "answers.jsonl").read_text().splitlines())}
    counts = [s["token_counts"][0]["visual_tokens"] for s in samples]
    assert counts == [records[i]["metadata"]["visual_tokens"] for i in range(len(QUESTIONS))]
    assert all(100 <= c <= 100 + 3 * 24 for c in counts), counts  # K patches, and a newline per grid row kept


PROCESSOR_FAMILIES = {  # family -> (tiny builder module, function, keywords that keep its sequences short)
    "llava-onevision": ("llava.model.family_onevision", "save_tiny_onevision", {"vision_aspect_ratio": "anyres_max_2"}),
    "qwen2_5_vl": ("llava.model.family_qwen2_5_vl", "save_tiny_qwen2_5_vl", {}),
}


@pytest.mark.parametrize("family", sorted(PROCESSOR_FAMILIES))
def test_processor_families_answer_as_model_vqa_loader_with_chat_template(family, task_dir, tmp_path):
    """A processor family through the plugin with no conv_mode: its chat template and processor on the PIL
    images of the task's docs, answers and per-image visual tokens equal to `model_vqa_loader`'s with no
    --conv-mode, at K = 16 in batches of 2."""
    import importlib

    module, save, kwargs = PROCESSOR_FAMILIES[family]
    path = str(getattr(importlib.import_module(module), save)(tmp_path / "tiny", **kwargs))
    samples = _lmms(task_dir, f"pretrained={path},visual_token_num=16,device=cpu,dtype=float32",
                    tmp_path / "lmms", batch_size=2)
    expected = _driver(path, tmp_path, 16, conv_mode=None)
    assert [_response(s) for s in samples] == expected
    records = {r["question_id"]: r for r in map(json.loads, (tmp_path / "answers.jsonl").read_text().splitlines())}
    assert all(r["metadata"]["conv_mode"] is None for r in records.values())
    counts = [s["token_counts"][0] for s in samples]
    want = [records[i]["metadata"]["visual_tokens"] for i in range(len(QUESTIONS))]
    assert [c["visual_tokens_per_image"] for c in counts] == [w if isinstance(w, list) else [w] for w in want]
    assert all(0 < c["visual_tokens"] <= 16 for c in counts), counts  # one image per doc, at most K kept
    assert all(records[i]["metadata"]["visual_tokens_unpruned"] > 16 for i in records)  # K really pruned


def test_processor_family_defaults_to_its_chat_template_and_an_explicit_conv_mode_wins():
    from llava.integrations.lmms_eval_model import default_conv_mode, runner_families
    from llava.model.inputs_builder import get_inputs_builder, list_inputs_builders

    assert runner_families() == ("llava", "llava-hf", *list_inputs_builders())
    assert {"llava-onevision", "qwen2_5_vl", "qwen3_vl"} <= set(runner_families())
    builder = get_inputs_builder("llava-onevision")
    assert default_conv_mode(None, builder) is None and default_conv_mode("None", builder) is None
    assert default_conv_mode(None, None) == "vicuna_v1"
    assert default_conv_mode("vicuna_v1", builder) == "vicuna_v1" and default_conv_mode("'llava_v1'", None) == "llava_v1"


def test_families_without_a_runner_are_refused_by_name(tmp_path):
    """Video-LLaVA has no image inputs builder: a clear error naming the family and the ones answered."""
    from llava.integrations.lmms_eval_model import FasterVLM
    from llava.model.families import get_family

    path = get_family("video-llava-hf").tiny(tmp_path)
    with pytest.raises(ValueError, match=r"a 'video-llava-hf' checkpoint; .* for the llava, llava-hf, llava-onevision, "
                                         r".*families only"):
        FasterVLM(pretrained=path)


def test_pruning_args_with_their_own_separator(tiny_path, task_dir, tmp_path):
    args = f"pretrained={tiny_path},pruning_method=vispruner,pruning_args=important_ratio=0.5;step=8," \
           "visual_token_num=58,device=cpu,dtype=float32"
    samples = _lmms(task_dir, args, tmp_path / "lmms")
    expected = _driver(tiny_path, tmp_path, 58, ["--pruning-method", "vispruner",
                                                "--pruning-args", "important_ratio=0.5,step=8"])
    assert [_response(s) for s in samples] == expected


def test_plugin_is_an_entry_point_and_changes_nothing_in_lmms_eval():
    code = textwrap.dedent("""
        import lmms_eval.api.model as m, lmms_eval.api.instance as i
        before = {(mod.__name__, k): id(v) for mod in (m, i) for k, v in vars(mod).items()}
        from lmms_eval.models import MODEL_REGISTRY_V2
        resolved = MODEL_REGISTRY_V2.resolve("fastervlm")
        print(resolved.class_path)
        cls = MODEL_REGISTRY_V2.get_model_class("fastervlm")
        after = {(mod.__name__, k): id(v) for mod in (m, i) for k, v in vars(mod).items()}
        assert before == after
        assert cls.__module__ == "llava.integrations.lmms_eval_model", cls
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "llava.integrations.lmms_eval_model.FasterVLM" in result.stdout


def test_bad_model_args_name_the_argument(tiny_path):
    from llava.integrations.lmms_eval_model import FasterVLM

    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['visual_tokens'\]"):
        FasterVLM(pretrained=tiny_path, visual_tokens=58)
    with pytest.raises(ValueError, match="unknown pruning method 'nope'"):
        FasterVLM(pretrained=tiny_path, pruning_method="nope")
