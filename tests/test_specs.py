"""Kernel spec loading: profiles, overrides and the validation errors, each naming file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdarts.errors import SpecError
from kdarts.kernel.specs import SAMPLE_DATASET_SLUG, list_specs, load_spec, normalize_source, parse_duration

BASE_KERNEL = """
[kernel]
template = "tiny.ipynb.j2"
slug = "tiny-kernel"
title = "tiny kernel"
{extra_kernel}

[params]
epochs = 3
rate = 0.5
name = "x"
flag = false
{extra_params}
"""


def write_spec(folder: Path, text: str, name: str = "tiny") -> Path:
    kernels = folder / "kernels"
    kernels.mkdir(exist_ok=True)
    path = kernels / f"{name}.toml"
    path.write_text(text)
    return path


def spec_text(extra_kernel: str = "", extra_params: str = "", tail: str = "") -> str:
    return BASE_KERNEL.format(extra_kernel=extra_kernel, extra_params=extra_params) + tail


def load_error(tmp_path: Path, text: str, **options) -> str:
    write_spec(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_spec("tiny", cwd=tmp_path, **options)
    return str(caught.value)


def test_builtin_search_spec_loads_every_profile():
    for profile in ("local", "kaggle", "colab"):
        spec = load_spec("search", profile=profile)
        assert spec.profile == profile


def test_kaggle_profile_attaches_whole_cifar10():
    spec = load_spec("search", platform="kaggle")
    assert spec.dataset_sources("alice")[0] == "alice/kdarts-cifar10"
    assert spec.kernel.accelerator == "NvidiaTeslaT4"
    assert spec.params["epochs"] == 50


def test_platform_without_profile_uses_default_profile(tmp_path):
    write_spec(tmp_path, spec_text('default_profile = "quick"', tail="[profiles.quick.params]\nepochs = 1\n"))
    spec = load_spec("tiny", platform="kaggle", cwd=tmp_path)
    assert spec.profile == "quick"
    assert spec.params["epochs"] == 1


def test_local_profile_is_the_default():
    spec = load_spec("search")
    assert spec.profile == "local"
    assert spec.kernel.accelerator is None
    assert spec.dataset_slug() == SAMPLE_DATASET_SLUG


def test_local_kernels_folder_overrides_builtin(tmp_path):
    text = spec_text().replace("tiny-kernel", "search-local").replace("tiny kernel", "search local")
    write_spec(tmp_path, text, name="search")
    assert load_spec("search", cwd=tmp_path).kernel.slug == "search-local"
    assert list_specs(tmp_path)["search"] == tmp_path / "kernels" / "search.toml"


def test_set_overrides_param_and_kernel_key(tmp_path):
    write_spec(tmp_path, spec_text())
    spec = load_spec("tiny", overrides=["epochs=1", "rate=2", "kernel.session_limit=40s"], cwd=tmp_path)
    assert spec.params["epochs"] == 1
    assert spec.params["rate"] == 2.0
    assert spec.kernel.session_limit == 40.0


def test_sources_strip_prefixes(tmp_path):
    write_spec(tmp_path, spec_text('dataset = "datasets/bob/cifar-ten"\nkernel_sources = ["code/bob/search-one"]'))
    spec = load_spec("tiny", cwd=tmp_path)
    assert spec.dataset_sources("alice") == ["bob/cifar-ten"]
    assert spec.kernel_source_refs("alice") == ["bob/search-one"]


def test_bare_dataset_slug_belongs_to_pusher(tmp_path):
    write_spec(tmp_path, spec_text('dataset = "cifar-ten"\ndatasets = ["extra-data"]'))
    spec = load_spec("tiny", cwd=tmp_path)
    assert spec.dataset_sources("alice") == ["alice/cifar-ten", "alice/extra-data"]


def test_assets_dataset_is_attached(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "extra.bin").write_bytes(b"data")
    write_spec(tmp_path, spec_text('assets = ["extra.bin"]'))
    spec = load_spec("tiny", cwd=tmp_path)
    assert spec.dataset_sources("alice")[-1] == "alice/tiny-kernel-assets"


@pytest.mark.parametrize(
    ("extra_kernel", "key", "value"),
    [
        ('slug = "Bad_Slug"', "kernel.slug", "'Bad_Slug'"),
        ('slug = "abc"', "kernel.slug", "'abc'"),
        ('slug = "a' + "b" * 50 + '"', "kernel.slug", "'a" + "b" * 50 + "'"),
        ('internet = "yes"', "kernel.internet", "'yes'"),
        ("private = 1", "kernel.private", "1"),
        ('dataset = "bob/cifar/3"', "kernel.dataset", "'bob/cifar/3'"),
        ('datasets = ["bob/x"]', "kernel.datasets", "['bob/x']"),
        ('kernel_sources = ["https://kaggle.com/code/bob/x"]', "kernel.kernel_sources", "['https://kaggle.com/code/bob/x']"),
        ('session_limit = "forever"', "kernel.session_limit", "'forever'"),
        ('machine_shape = "T4 x2"', "kernel.machine_shape", "'T4 x2'"),
        ('gpu = true', "kernel.gpu", "True"),
        ('assets = ["../secret"]', "kernel.assets", "['../secret']"),
    ],
)
def test_invalid_kernel_key_names_file_key_value(tmp_path, extra_kernel, key, value):
    text = spec_text()
    if extra_kernel.startswith("slug"):
        text = text.replace('slug = "tiny-kernel"\n', "")
    text = text.replace("[kernel]\n", f"[kernel]\n{extra_kernel}\n", 1)
    message = load_error(tmp_path, text)
    assert str(tmp_path / "kernels" / "tiny.toml") in message
    assert f"{key} = {value}" in message


def test_title_must_slugify_to_slug(tmp_path):
    message = load_error(tmp_path, spec_text().replace('title = "tiny kernel"', 'title = "Tiny Kernel Two"'))
    assert "kernel.title = 'Tiny Kernel Two' becomes the slug 'tiny-kernel-two'" in message


def test_missing_template_is_named(tmp_path):
    message = load_error(tmp_path, spec_text().replace('template = "tiny.ipynb.j2"\n', ""))
    assert "kernel.template is missing" in message


def test_unknown_table_is_error(tmp_path):
    message = load_error(tmp_path, spec_text(tail="[extras]\nx = 1\n"))
    assert "unknown table(s) extras" in message


def test_unknown_param_in_set_is_error(tmp_path):
    message = load_error(tmp_path, spec_text(), overrides=["epoch=2"])
    assert "--set epoch = 2: unknown parameter 'epoch'" in message


def test_kernel_key_without_prefix_gets_hint(tmp_path):
    message = load_error(tmp_path, spec_text(), overrides=["session_limit=40"])
    assert "--set kernel.session_limit=40s" in message


def test_param_type_mismatch_is_error(tmp_path):
    message = load_error(tmp_path, spec_text(), overrides=["flag=1"])
    assert "--set flag = 1: expected a boolean (true or false) like params.flag = False" in message


def test_unknown_param_in_profile_is_error(tmp_path):
    message = load_error(tmp_path, spec_text(tail="[profiles.quick.params]\nepoch = 1\n"), profile="quick")
    assert "profiles.quick.params.epoch = 1: unknown parameter" in message


def test_unknown_key_in_profile_names_profile(tmp_path):
    message = load_error(tmp_path, spec_text(tail="[profiles.quick]\nenable_gpu = true\n"), profile="quick")
    assert "profiles.quick.enable_gpu = True: unknown key" in message


def test_profile_value_error_names_profile(tmp_path):
    message = load_error(tmp_path, spec_text(tail='[profiles.quick]\ninternet = "no"\n'), profile="quick")
    assert "profiles.quick.internet = 'no'" in message


def test_unknown_profile_lists_profiles(tmp_path):
    message = load_error(tmp_path, spec_text(tail="[profiles.quick]\n"), profile="slow")
    assert "--profile 'slow' not found; profiles: quick" in message


def test_invalid_toml_names_file(tmp_path):
    message = load_error(tmp_path, "[kernel\n")
    assert "invalid TOML" in message


def test_unknown_spec_lists_known(tmp_path):
    with pytest.raises(SpecError, match="known kernels: .*search"):
        load_spec("nothing-here", cwd=tmp_path)


def test_set_without_equals_is_error(tmp_path):
    message = load_error(tmp_path, spec_text(), overrides=["epochs"])
    assert "invalid --set 'epochs'" in message


@pytest.mark.parametrize(("text", "seconds"), [(40, 40.0), ("40s", 40.0), ("30m", 1800.0), ("12h", 43200.0), ("1.5h", 5400.0)])
def test_parse_duration_units(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("value", ["kernels/bob/search-one", "c/bob/search-one", "bob/search-one"])
def test_normalize_source_strips_prefix(value):
    assert normalize_source(value) == "bob/search-one"
