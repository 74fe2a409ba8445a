"""bench/gpu_check.py passes its CPU dry run (--device cpu --small) and writes one JSON."""
import json

from bench import gpu_check


def test_gpu_check_cpu_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    report = gpu_check.main(["--device", "cpu", "--small", "--out", str(out)])
    assert json.loads(out.read_text())["sections"].keys() == report["sections"].keys()
    sections = report["sections"]
    assert set(sections) == {"tvl1", "loader", "train_step", "precision", "pretrain", "ddp"}
    for name, section in sections.items():
        assert "error" not in section, (name, section.get("traceback"))
    assert sections["tvl1"]["torch"] and sections["tvl1"]["accuracy_vs_opencv"]["epe"] <= 0.3
    assert sections["train_step"]["fp32_eager"]["clips_per_s"] > 0
    assert sections["train_step"]["flops_per_clip_step"] > 0
    assert sections["loader"]["jitter_on_cpu_clips_per_s"] > 0
    if gpu_check.VIDEOS.exists():
        assert sections["loader"]["device_path_on_cpu_clips_per_s"] > 0
        assert sections["loader"]["loader_cpu_clips_per_s"] > 0 and sections["loader"]["loader_device_clips_per_s"] > 0
    assert sections["precision"]["steps"] == 4 and len(sections["precision"]["fp32_other_seeds_last10"]) == 1
    assert sections["pretrain"]["epochs"] == 2 and sections["pretrain"]["device_loader"]["epochs"] == 2
    assert len(sections["pretrain"]["device_loader_epoch_loss_relative_differences"]) == 2
    assert "skipped" in sections["ddp"]
