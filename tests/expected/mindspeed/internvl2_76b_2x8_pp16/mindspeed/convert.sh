#!/bin/bash
# Rendered by launcher.engines.mindspeed for <TMP>/run; re-render, do not edit.
# The split here is the one in mindspeed/model.json (pipeline_num_layers):
#   vit_pp_layers [[11,12,12,10,0,0,0,0,0,0,0,0,0,0,0,0]]  llm_pp_layers [[0,0,0,1,5,6,7,7,7,7,7,7,7,7,6,6]]
# bash convert.sh hf_to_mm        HF weights -> <TMP>/run/mindspeed/mm-tp1-pp16-llm0.0.0.1.5.6.7.7.7.7.7.7.7.7.6.6-vit11.12.12.10.0.0.0.0.0.0.0.0.0.0.0.0 (what --load reads)
# bash convert.sh mm_to_hf [DIR]  a trained checkpoint (default: the latest in output/) -> output/hf
set -euo pipefail
case "${1:-hf_to_mm}" in
  hf_to_mm)
    mm-convert InternVLConverter hf_to_mm \
      --cfg.mm_dir <TMP>/run/mindspeed/mm-tp1-pp16-llm0.0.0.1.5.6.7.7.7.7.7.7.7.7.6.6-vit11.12.12.10.0.0.0.0.0.0.0.0.0.0.0.0 \
      --cfg.hf_config.hf_dir /share/ckpt/InternVL2-Llama3-76B \
      --cfg.parallel_config.llm_pp_layers '[[0,0,0,1,5,6,7,7,7,7,7,7,7,7,6,6]]' \
      --cfg.parallel_config.vit_pp_layers '[[11,12,12,10,0,0,0,0,0,0,0,0,0,0,0,0]]' \
      --cfg.parallel_config.tp_size 1 \
      --cfg.trust_remote_code True
    printf '%s\n' '{"tp":1,"pp":16,"vpp":null,"vit_pp_layers":[11,12,12,10,0,0,0,0,0,0,0,0,0,0,0,0],"llm_pp_layers":[0,0,0,1,5,6,7,7,7,7,7,7,7,7,6,6]}' > <TMP>/run/mindspeed/mm-tp1-pp16-llm0.0.0.1.5.6.7.7.7.7.7.7.7.7.6.6-vit11.12.12.10.0.0.0.0.0.0.0.0.0.0.0.0/vlm_launch_split.json
    ;;
  mm_to_hf)
    CKPT="${2:-<TMP>/run/output}"
    mm-convert InternVLConverter mm_to_hf \
      --cfg.save_hf_dir <TMP>/run/output/hf \
      --cfg.mm_dir "$CKPT" \
      --cfg.hf_config.hf_dir /share/ckpt/InternVL2-Llama3-76B \
      --cfg.parallel_config.llm_pp_layers '[0,0,0,1,5,6,7,7,7,7,7,7,7,7,6,6]' \
      --cfg.parallel_config.vit_pp_layers '[11,12,12,10,0,0,0,0,0,0,0,0,0,0,0,0]' \
      --cfg.parallel_config.tp_size 1
    ;;
  *)
    echo "usage: bash $0 [hf_to_mm|mm_to_hf [CHECKPOINT_DIR]]" >&2
    exit 2
    ;;
esac
