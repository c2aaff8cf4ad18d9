"""DES packer: plan and pack files into shards; the des-pack and des commands."""

__all__: list[str] = []
