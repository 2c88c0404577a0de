# Loads a `wsdscope export --format hf` folder the way any user of Hugging Face transformers
# would (AutoModelForCausalLM, no custom code, float32 on the CPU) and prints, as one JSON
# object on stdout, the logits of the given token sequence and the model class it built; with
# a text, also the ids AutoTokenizer gives that text from the exported tokenizer files.
#
#   python hf_logits.py EXPORT_DIR TOKENS_JSON [TEXT]
#
# TOKENS_JSON is a JSON list of token ids (one sequence). Used by tests/tests/export_hf.rs.
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    folder, tokens = sys.argv[1], json.loads(sys.argv[2])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        ids = torch.tensor([tokens], dtype=torch.long)
        logits = model(input_ids=ids).logits[0]  # (T, V)
    out = {
        "class": type(model).__name__,
        "dtype": str(next(model.parameters()).dtype),
        "logits": logits.tolist(),
    }
    if len(sys.argv) > 3:
        tok = AutoTokenizer.from_pretrained(folder)
        out["ids"] = tok(sys.argv[3], add_special_tokens=True)["input_ids"]
        out["eos_token_id"] = tok.eos_token_id
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
