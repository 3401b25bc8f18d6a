import json

from mentalglm.data.instructions import make_instruction
from mentalglm.data.records import Post
from mentalglm.instruct.export import export_samples
from mentalglm.tasks import get_task
from mentalglm.tasks.layout import render_answer


def test_answer_layout_puts_labels_first_in_declared_order():
    task = get_task("cognitive_distortion")
    assert render_answer(task, ["labeling", "mind_reading"], "因为……") == "标签：读心术、乱贴标签\n推理：因为……"
    assert render_answer(task, ["labeling"], None) == "标签：乱贴标签"


def test_instruction_quotes_the_post_and_asks_the_task_question():
    task = get_task("suicide_risk")
    sample = make_instruction(task, Post("t:1", "我不想活了", ("high",), "fixture"), "帖子说“我不想活了”。")
    assert "“我不想活了”" in sample.user and task.question in sample.user
    assert sample.answer.startswith("标签：高自杀风险\n推理：")
    assert [m["role"] for m in sample.messages] == ["system", "user", "assistant"]


def test_export_writes_all_formats_and_scrubs_pii(tmp_path):
    task = get_task("emotion")
    posts = [Post(f"t:{i}", f"@某某 今天真开心 13812345678 第{i}天", ("happy",), "fixture") for i in range(3)]
    samples = [make_instruction(task, p, "帖子说“真开心”。") for p in posts]
    result = export_samples(samples, tmp_path, "train", ["chat", "alpaca", "hf"])
    rows = [json.loads(line) for line in (tmp_path / "train.chat.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and "13812345678" not in json.dumps(rows, ensure_ascii=False)
    alpaca = json.loads((tmp_path / "train.alpaca.json").read_text(encoding="utf-8"))
    assert alpaca[0]["output"].startswith("标签：高兴") and "@某某" not in alpaca[0]["input"]
    from datasets import load_from_disk

    assert len(load_from_disk(str(tmp_path / "hf" / "train"))) == 3
    assert result["pii_replaced"]["phone"] == 3
