"""Reading fairseq's printed output (plain text)."""


def test_fairseq_log_lines_are_read_exactly():
    from flop_fairseq.tools.fairseq_log import log_fields, parse_eval_lm

    text = ("2026-11-24 | INFO | fairseq_cli.eval_lm | Evaluated 62,800 tokens in 6.8s (9183.47 tokens/s)\n"
            "2026-11-24 | INFO | fairseq_cli.eval_lm | Loss (base 2): 8.6946, Perplexity: 414.33\n")
    assert parse_eval_lm(text) == {"loss_base2": 8.6946, "ppl": 414.33, "tokens": 62800, "seconds": 6.8,
                                   "tokens_per_s": 9183.47}
    assert parse_eval_lm(text.splitlines()[0]) is None
    line = ("| train_inner | epoch 001:     25 / 1020 loss=8.5, target=0.048, lambda1=-0.1523, "
            "wps=1.2e+04, num_updates=25, lr=3e-05")
    assert log_fields(line) == {"loss": "8.5", "target": "0.048", "lambda1": "-0.1523", "wps": "1.2e+04",
                                "num_updates": "25", "lr": "3e-05"}
