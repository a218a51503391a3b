"""Ironic's own rendering and layout code, run without an Ironic service.

tests/ironic_files.rs runs this with the Python of a virtualenv that holds the `ironic` wheel
(no dependencies) and Jinja2. Importing `ironic.common.pxe_utils` would pull in oslo, the
database models and more; instead the functions that render templates and lay out the HTTP and
TFTP roots are taken, unchanged, from the installed wheel's source (by name, with `ast`) and run
against small stand-ins for what they reach outside themselves: CONF, a task with its node and
ports, and the logger. What they write is therefore what Ironic writes.

Usage: render.py REQUEST.json; prints a JSON answer on stdout. Requests ("op"):
  check   render the cases of ironic/tests/unit/common/test_pxe_utils.py and compare them with
          the expected files that ship in ironic/tests/unit/drivers/
  layout  lay out nodes the way the ipxe boot interface (or the GRUB-based pxe one) does
  switch  Ironic's switch_pxe_config on a node's config (after a deploy)
"""

import ast
import difflib
import errno
import hashlib
import importlib.metadata
import json
import logging
import os
import pathlib
import re
import shutil
import sys
import types
from urllib import parse as urlparse

import jinja2
from jinja2 import sandbox as jinja2sandbox

import ironic

IRONIC = pathlib.Path(ironic.__file__).parent
LOG = logging.getLogger("ironic")


def functions(module_path, names, namespace):
    """Defines `names` from the wheel's `module_path` in `namespace`, as written there."""
    source = (IRONIC / module_path).read_text()
    tree = ast.parse(source)
    found = [n for n in tree.body
             if isinstance(n, ast.FunctionDef) and n.name in names]
    missing = set(names) - {n.name for n in found}
    if missing:
        raise SystemExit(f"{module_path} has no {sorted(missing)}")
    for node in found:
        # Decorators (metrics timers and the like) are Ironic's plumbing, not its logic.
        node.decorator_list = []
    code = compile(ast.Module(body=found, type_ignores=[]), str(IRONIC / module_path), "exec")
    exec(code, namespace)
    return types.SimpleNamespace(**{n: namespace[n] for n in names})


class FailedToGetIPAddressOnPort(Exception):
    pass


exception = types.SimpleNamespace(
    FailedToGetIPAddressOnPort=FailedToGetIPAddressOnPort,
    InvalidIPv4Address=ValueError,
    IncorrectConfiguration=RuntimeError,
    InvalidParameterValue=ValueError,
)


def conf(http_root="/httpboot", tftp_root="/tftpboot", http_url="http://1.2.3.4:1234",
         fallback=None):
    """The options the functions read, at Ironic 39.0.0's defaults unless given."""
    ns = types.SimpleNamespace
    return ns(
        deploy=ns(http_root=http_root, http_url=http_url),
        pxe=ns(
            tftp_root=tftp_root,
            dir_permission=None,
            file_permission=0o644,
            ipxe_boot_script=str(IRONIC / "drivers/modules/boot.ipxe"),
            ipxe_fallback_script=fallback,
            ipxe_use_swift=False,
            initial_grub_template=str(IRONIC / "drivers/modules/initial_grub_cfg.template"),
        ),
        neutron=ns(add_all_ports=False),
        dhcp=ns(dhcp_provider="none"),
    )


def file_checksum(path, algorithm="sha256"):
    # oslo_utils.fileutils.compute_file_checksum, for utils.file_has_content.
    return hashlib.new(algorithm, pathlib.Path(path).read_bytes()).hexdigest()


def load(cfg):
    """Ironic's functions, bound to `cfg`."""
    utils_ns = {
        "os": os, "errno": errno, "hashlib": hashlib, "jinja2": jinja2,
        "jinja2sandbox": jinja2sandbox, "LOG": LOG, "CONF": cfg, "exception": exception,
        "_": lambda s: s,
        "fileutils": types.SimpleNamespace(compute_file_checksum=file_checksum),
    }
    utils = functions("common/utils.py", [
        "render_template", "write_to_file", "create_link_without_raise",
        "unlink_without_raise", "file_has_content", "_get_hash_object",
    ], utils_ns)
    deploy_ns = {"os": os, "re": re, "LOG": LOG, "CONF": cfg}
    deploy_utils = functions("drivers/modules/deploy_utils.py", [
        "_replace_lines_in_file", "_replace_root_uuid", "_replace_boot_line",
        "_replace_disk_identifier", "switch_pxe_config",
    ], deploy_ns)
    boot_mode = {}
    pxe_ns = {
        "os": os, "shutil": shutil, "urlparse": urlparse, "LOG": LOG, "CONF": cfg,
        "utils": utils, "deploy_utils": deploy_utils, "exception": exception,
        "PXE_CFG_DIR_NAME": "pxelinux.cfg",
        "KERNEL_RAMDISK_LABELS": {"deploy": ["deploy_kernel", "deploy_ramdisk"]},
        # dhcp_provider = none (Metal3, Bifrost with dnsmasq): no addresses known.
        "dhcp_factory": types.SimpleNamespace(DHCPFactory=lambda: types.SimpleNamespace(
            provider=types.SimpleNamespace(get_ip_addresses=lambda task: []))),
        "boot_mode_utils": types.SimpleNamespace(
            get_boot_mode=lambda node: boot_mode.get(node.uuid, "bios")),
        "service_utils": types.SimpleNamespace(is_glance_image=lambda href: False),
        "fileutils": types.SimpleNamespace(
            ensure_tree=lambda p: os.makedirs(p, exist_ok=True)),
    }
    pxe_utils = functions("common/pxe_utils.py", [
        "_get_root_dir", "ensure_tree", "_ensure_config_dirs_exist",
        "_link_mac_pxe_configs", "_link_ip_address_pxe_configs", "_get_pxe_grub_mac_path",
        "_get_pxe_mac_path", "_get_pxe_ip_address_path", "get_kernel_ramdisk_info",
        "get_pxe_config_file_path", "get_http_url_path_from_label", "create_pxe_config",
        "create_ipxe_boot_script", "place_common_config", "build_deploy_pxe_options",
        "build_instance_pxe_options",
    ], pxe_ns)
    return utils, deploy_utils, pxe_utils, boot_mode


def check(_request):
    """The renderings test_pxe_utils.py checks, against the files the wheel ships."""
    utils, _, _, _ = load(conf())
    unit = IRONIC / "tests/unit/drivers"
    modules = IRONIC / "drivers/modules"
    # TestPXEUtils.setUp's options, as written there.
    pxe_options = {
        "deployment_aki_path": "/tftpboot/1be26c0b-03f2-4d2e-ae87-c02d7f33c123/deploy_kernel",
        "aki_path": "/tftpboot/1be26c0b-03f2-4d2e-ae87-c02d7f33c123/kernel",
        "ari_path": "/tftpboot/1be26c0b-03f2-4d2e-ae87-c02d7f33c123/ramdisk",
        "pxe_append_params": "test_param",
        "deployment_ari_path": "/tftpboot/1be26c0b-03f2-4d2e-ae87-c02d7f33c123/deploy_ramdisk",
        "ipa-api-url": "http://192.168.122.184:6385",
        "ipxe_timeout": 0,
        "ramdisk_opts": "ramdisk_param",
        "ks_cfg_url": "http://fake/ks.cfg",
        "stage2_url": "http://fake/stage2",
    }
    ipxe_options = dict(pxe_options)
    ipxe_options.update({
        "deployment_aki_path": "http://1.2.3.4:1234/deploy_kernel",
        "deployment_ari_path": "http://1.2.3.4:1234/deploy_ramdisk",
        "aki_path": "http://1.2.3.4:1234/kernel",
        "ari_path": "http://1.2.3.4:1234/ramdisk",
        "initrd_filename": "deploy_ramdisk",
    })
    ipxe_timeout = dict(ipxe_options, ipxe_timeout=120)
    grub_options = dict(pxe_options, boot_mode="uefi", tftp_server="192.0.2.1")
    braces = {"ROOT": "{{ ROOT }}", "DISK_IDENTIFIER": "{{ DISK_IDENTIFIER }}"}
    parens = {"ROOT": "(( ROOT ))", "DISK_IDENTIFIER": "(( DISK_IDENTIFIER ))"}
    cases = [
        ("boot.ipxe", modules / "boot.ipxe", {"ipxe_for_mac_uri": "pxelinux.cfg/"}),
        ("boot-fallback.ipxe", modules / "boot.ipxe",
         {"ipxe_for_mac_uri": "pxelinux.cfg/", "ipxe_fallback_script": "inspector.ipxe"}),
        ("ipxe_config.template", modules / "ipxe_config.template",
         dict(braces, pxe_options=ipxe_options)),
        ("ipxe_config_timeout.template", modules / "ipxe_config.template",
         dict(braces, pxe_options=ipxe_timeout)),
        ("pxe_grub_config.template", modules / "pxe_grub_config.template",
         dict(parens, pxe_options=grub_options)),
    ]
    checked = []
    for expected_name, template, params in cases:
        rendered = utils.render_template(str(template), params)
        expected = (unit / expected_name).read_text().rstrip()
        if rendered != expected:
            diff = "\n".join(difflib.unified_diff(
                expected.splitlines(), rendered.splitlines(),
                f"expected {expected_name}", "rendered", lineterm=""))
            raise SystemExit(f"{template.name} renders differently from {expected_name}:\n{diff}")
        checked.append(expected_name)
    return {"checked": checked}


class Port:
    def __init__(self, address):
        self.address = address
        self.pxe_enabled = True
        self.extra = {}


class Node:
    def __init__(self, spec):
        self.uuid = spec["uuid"]
        self.driver_internal_info = {}
        self.instance_info = {}
        if spec.get("ramdisk_kernel_arguments"):
            self.instance_info["ramdisk_kernel_arguments"] = spec["ramdisk_kernel_arguments"]


def layout(request):
    """What the ipxe boot interface writes for each node before it powers it on (or the pxe one,
    `"interface": "pxe"`: GRUB configs in the TFTP root, UEFI)."""
    ipxe = request.get("interface", "ipxe") == "ipxe"
    cfg = conf(request["http_root"], request["tftp_root"], request["http_url"],
               request.get("fallback_script"))
    utils, _, pxe_utils, boot_mode = load(cfg)
    written = []
    if ipxe:
        # ironic/drivers/modules/ipxe.py: iPXEBoot.__init__ renders the master script.
        pxe_utils.create_ipxe_boot_script()
    else:
        pxe_utils.place_common_config()
    for spec in request["nodes"]:
        node = Node(spec)
        boot_mode[node.uuid] = "bios" if ipxe else "uefi"
        task = types.SimpleNamespace(node=node, ports=[Port(m) for m in spec["macs"]])
        driver_info = {"deploy_kernel": spec["deploy_kernel"],
                       "deploy_ramdisk": spec["deploy_ramdisk"]}
        pxe_info = pxe_utils.get_kernel_ramdisk_info(node.uuid, driver_info,
                                                     ipxe_enabled=ipxe)
        root = pxe_utils._get_root_dir(ipxe)
        # The instance's kernel and ramdisk (a ramdisk deploy keeps booting over the network).
        for label in ("kernel", "ramdisk"):
            if spec.get(label):
                pxe_info[label] = (spec[label], os.path.join(root, node.uuid, label))
        options = pxe_utils.build_deploy_pxe_options(task, pxe_info, ipxe_enabled=ipxe)
        options.update(pxe_utils.build_instance_pxe_options(task, pxe_info, ipxe_enabled=ipxe))
        # build_extra_pxe_options: [pxe] kernel_append_params, then the agent's parameters
        # (deploy_utils.build_agent_options: ipa-api-url) as "key=value" after a space.
        append = spec["kernel_append_params"]
        append += " " + " ".join(f"{k}={v}" for k, v in {"ipa-api-url": spec["ipa_api_url"]}.items())
        options.update({"pxe_append_params": append, "tftp_server": request.get("tftp_server"),
                        "ipxe_timeout": 0})
        template = "ipxe_config.template" if ipxe else "pxe_grub_config.template"
        pxe_utils.create_pxe_config(task, options, str(IRONIC / "drivers/modules" / template),
                                    ipxe_enabled=ipxe)
        # The image cache fetches driver_info's images to these paths (pxe_base.py
        # _cache_ramdisk_kernel); here they are local files, linked as the cache links them.
        for label, (href, path) in pxe_info.items():
            if os.path.exists(path):
                os.unlink(path)
            try:
                os.link(href, path)
            except OSError:
                shutil.copy2(href, path)
            written.append(path)
    return {"written": written}


def switch(request):
    """deploy_utils.switch_pxe_config, as pxe_base.PXEBaseMixin.prepare_instance calls it for
    a ramdisk deploy (ramdisk_boot) or a whole-disk image."""
    _, deploy_utils, _, _ = load(conf())
    mode = request["mode"]
    deploy_utils.switch_pxe_config(
        request["path"], request.get("root_uuid_or_disk_id"), request.get("boot_mode", "bios"),
        mode == "whole_disk", ramdisk_boot=mode == "ramdisk",
        ipxe_enabled=request.get("ipxe_enabled", True))
    return {"switched": request["path"]}


def main():
    with open(sys.argv[1]) as f:
        request = json.load(f)
    ops = {"check": check, "layout": layout, "switch": switch}
    answer = ops[request["op"]](request)
    answer["ironic"] = importlib.metadata.version("ironic")
    answer["jinja2"] = importlib.metadata.version("jinja2")
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
