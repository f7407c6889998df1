# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 0 — How to use this book
#
# This book builds **Bi-Level Routing Attention** (BRA) and the **BiFormer** vision transformer
# (Zhu, Wang, Ke, Zhang and Lau, CVPR 2023 {cite}`zhu2023biformer`) one small, checked step at a time. Everything you build also
# lives, tested, in the Python package `bralib`, so the code you write here is the code you can use later.
#
# **Learning goals.** After this chapter you can
#
# 1. open any chapter in JupyterLab and keep its notebook and its `.py` source in step;
# 2. find which `bralib` module each chapter builds, from the book's manifest `book.toml`;
# 3. run the checks: the `assert` cells of a chapter, one chapter on its own, and the whole test suite;
# 4. do an exercise and check your answer with `bralib.exercises.check`.

# %% [markdown]
# ## Why the book is built this way
#
# Papers make claims in tables. BiFormer's Table 7, for instance, says that with a 224×224 image, S = 7
# regions per side and top-k = 1, 4, 16, 49 routed regions in its four stages, **each query attends to
# 64, 64, 64 and 49 tokens**, where full attention in the first stage would look at all 56 × 56 = 3136.
# That one row is the whole promise of BRA: a query looks at a few well-chosen regions instead of
# everything. A claim like that is worth little until you can reproduce it, so every chapter here turns
# claims into numbers you compute and then `assert`. You will reproduce that row yourself in this
# chapter's warm-up exercise.
#
# Every chapter has the same shape: **title and goals → motivation (a claim or figure of the paper) →
# build in small steps → check against a reference with `assert` cells → summary → exercises**.
# Chapters are deterministic: seeded, on the CPU, printing rounded numbers, so your output matches ours.

# %%
import importlib.util
from pathlib import Path

import torch

torch.manual_seed(0)  # every chapter seeds its random numbers, so runs repeat exactly
x = torch.randn(2, 3)
print(x.round(decimals=3))  # and prints rounded values: the last digits differ between machines

# %% [markdown]
# ## 1. Open the course in JupyterLab
#
# From the repository's folder, the first command of the README sets everything up and opens this
# chapter:
#
# ```bash
# python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[dev]" \
#   && bralib book build && jupyter lab --allow-root --ServerApp.root_dir=. chapters/00_how_to_use.ipynb
# ```
#
# Each chapter is written as a plain Python file, `chapters/NN_slug.py`, in jupytext's "percent" format
# (cells start with `# %%`). That file is the single source of truth. `bralib book build` turns each one
# into the notebook `chapters/NN_slug.ipynb`, which git ignores. The file `jupytext.toml` pairs the two, so
# when you save a notebook in JupyterLab its `.py` twin is saved too: edit whichever you like.

# %% [markdown]
# ## 2. Which chapter builds what
#
# The manifest `book.toml` lists the chapters in reading order, with the `bralib` modules each one builds
# and the names of its exercises. `bralib.book` reads it; `bralib book list` prints the same table in a
# terminal.

# %%
from bralib.book import load_book
from bralib.book.notebooks import contents_table

book = load_book()  # the nearest book.toml: this notebook runs inside chapters/, the manifest is one level up
print(contents_table(book))

# %% [markdown]
# Each module a chapter builds is an ordinary file of the package, which you can open and import on its own:

# %%
import bralib

package_root = Path(bralib.__file__).parent.parent  # the folder that holds bralib/
for chapter in book.chapters:
    for module in chapter.builds:
        origin = Path(importlib.util.find_spec(module).origin).relative_to(package_root)
        print(f"chapter {chapter.number:2d} builds {module:<24} in {origin}")

# %%
first = book.chapters[0]
assert first.file == "chapters/00_how_to_use.py" and first.number == 0
assert "bralib.book" in first.builds
assert all(importlib.util.find_spec(module) is not None for c in book.chapters for module in c.builds)

# %% [markdown]
# ## 3. Run the checks
#
# A chapter checks itself with `assert` cells like the one above: if a step is wrong, the cell fails loudly.
# Here is the motivation's arithmetic for full attention, checked the same way. Stage *i* of BiFormer works
# on a map of 224 / 4 / 2^i tokens per side, and full attention looks at all of them:

# %%
image_size = 224
stage_sizes = [image_size // 4 // 2**i for i in range(4)]
full_attention_tokens = [side * side for side in stage_sizes]
print("tokens per side:", stage_sizes)
print("full attention looks at:", full_attention_tokens)
assert stage_sizes == [56, 28, 14, 7]
assert full_attention_tokens[0] == 3136  # the paper's number for stage 1

# %% [markdown]
# Three ways to run the checks, from a terminal in the repository:
#
# * `bralib book check 0` builds and runs this chapter and prints a table of chapter, status and seconds
#   (leave out the `0` for every chapter). A chapter fails if a cell fails or if it takes longer than
#   the time budget in `book.toml`.
# * The README's second command runs everything CI runs: `ruff check .`, `bralib book build`, and pytest
#   on the tests in `tests/` *and* on every chapter notebook (`--nbval-lax`: each code cell is a test
#   that passes when it runs without error).
# * In JupyterLab, *Run → Run All Cells*: an `AssertionError` points at the step that went wrong.

# %% [markdown]
# ## 4. How exercises work
#
# Each chapter ends with exercises. For chapter `NN_slug` they live in two files:
#
# * `exercises/NN_slug.py`: **yours**, one function per exercise, each raising `NotImplementedError`
#   until you write it;
# * `exercises/solutions/NN_slug.py`: the authors' answers, for when you are done or stuck.
#
# `check(name)` reads your function from your file afresh (no kernel restart needed after you edit it),
# runs it on a few cases and prints a verdict: what it tried, what it expected and what it got. It
# returns the verdict instead of raising, so a wrong answer never ends in a bare traceback.
#
# To see a verdict, here is a plausible wrong answer to this chapter's exercise: it divides with `/`,
# which turns whole numbers into floats.

# %%
from bralib.exercises import check, load_function


def tokens_to_attend_wrong(height, width, n_win, topk):
    return topk * height * width / n_win**2  # `/` gives 64.0, not 64


verdict = check("tokens_to_attend", tokens_to_attend_wrong)

# %%
assert not verdict.passed and verdict.status == "wrong answer"
assert "expected the int 64" in str(verdict)  # the verdict says what went wrong, in words

# The checker accepts a right answer too: the reference solution passes (run quietly, to keep it a surprise).
assert check("tokens_to_attend", load_function("tokens_to_attend", solution=True), verbose=False).passed

# %% [markdown]
# ## Summary
#
# * Chapters are `chapters/NN_slug.py` files; `bralib book build` makes their notebooks, and
#   `jupytext.toml` keeps a notebook and its `.py` in step while you work in JupyterLab.
# * `book.toml` maps every chapter to the `bralib` modules it builds and to its exercises.
# * `assert` cells check each step; `bralib book check` runs whole chapters; the README's test command
#   runs everything CI runs.
# * `check(name)` grades your function in `exercises/NN_slug.py` and explains what is wrong.
#
# ## Exercises
#
# Each exercise is tagged with its difficulty and its kind: *transcription* (write again what the chapter
# showed), *design* (work out something the chapter did not show) or *experiment* (build a measurement, then
# use it to answer a question). The solutions in `exercises/solutions/` answer every question asked here.
#
# **0.1 `tokens_to_attend` (warm-up)** *[easy · transcription]*. Open `exercises/00_how_to_use.py` and write
# `tokens_to_attend(height, width, n_win, topk)`: how many tokens one query attends to when the map is split
# into `n_win × n_win` regions and each query sees every token of `topk` regions. Then run the cell below (or
# `bralib exercise check tokens_to_attend` in a terminal) until it says PASSED: you will have reproduced the
# "tokens to attend" column of the paper's Table 7. More about exercises: `exercises/README.md`.
#
# **0.2 `plan_regions(image_size, tokens_per_query)`** *[medium · design]*. BiFormer's S = 7 fits a 224×224
# input because every stage's map (56, 28, 14) divides by 7. Choose (S, k) for each routed stage of another
# input size so that regions tile the map and every query still sees the same number of tokens. Any valid plan
# passes; at 512×512 with 64 tokens, which would you pick, and why can S = 7 not stay?

# %% tags=["nbval-ignore-output"]
# Tagged: its output changes as you work on the exercise (nbval --nbval-lax compares no outputs anyway).
your_verdict = check("tokens_to_attend")  # your function, read from exercises/00_how_to_use.py
your_plan = check("plan_regions")
