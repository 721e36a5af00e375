/* The skeleton and the sidecar linked into flash (.kcz_model) as constant data, as a firmware
 * holds its model. KCZ_SKELETON_FILE and KCZ_SIDECAR_FILE are the files' paths, as strings;
 * each file starts KCZ_PAD bytes (0-3) past a word boundary, to check that the decoder reads
 * inputs at any alignment. */
#ifndef KCZ_PAD
#define KCZ_PAD 0
#endif
    .section .kcz_model, "a"
    .balign 4
    .skip KCZ_PAD
    .global kcz_skeleton, kcz_skeleton_end, kcz_sidecar, kcz_sidecar_end
kcz_skeleton:
    .incbin KCZ_SKELETON_FILE
kcz_skeleton_end:
    .balign 4
    .skip KCZ_PAD
kcz_sidecar:
    .incbin KCZ_SIDECAR_FILE
kcz_sidecar_end:
