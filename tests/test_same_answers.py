"""The same sweep scored in two folders gives the same answers (tests/same_answers.py, the script that shows a
restructuring changed no answer), and the comparison finds a changed decision or value."""
import json

import pandas as pd

import evalkit
from evalkit.store.folder import RunDir
from same_answers import compare


def test_a_sweep_reproduces_in_a_new_folder_and_a_changed_answer_is_found(tmp_path, prompts):
    config = {"prompts": prompts, "seeds": 2, "steps": [2, 4, 8], "schedulers": ["euler", "dpmpp_2m_karras"],
              "metrics": ["ssim", "psnr"], "reference_steps": 20, "size": 32}
    first = evalkit.score({**config, "out": str(tmp_path / "a")})
    second = evalkit.score({**config, "out": str(tmp_path / "b")})
    assert compare(first.dir, second.dir).found == []

    folder = RunDir(second.dir)
    summary = json.loads(folder.summary_file.read_text())
    summary["min_steps"]["schedulers"]["euler"]["reached"] = not summary["min_steps"]["schedulers"]["euler"]["reached"]
    folder.write_summary(summary)
    table = pd.read_parquet(folder.set_scores_table)
    table.loc[0, "ci_low"] *= 1 + 1e-12
    folder.write_set_scores(table)
    exact, within = compare(first.dir, second.dir), compare(first.dir, second.dir, rtol=1e-9)
    assert [f for f in exact.found if f.startswith("set_scores.parquet: ci_low")] and 0 < exact.largest < 1e-9
    assert within.found == ["summary.json.min_steps.schedulers.euler.reached: "
                            f"{not summary['min_steps']['schedulers']['euler']['reached']} vs "
                            f"{summary['min_steps']['schedulers']['euler']['reached']}"]
