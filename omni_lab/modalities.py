"""The modality names, declared once: every module that lists modalities imports them from here.

MEDIA       the media a prompt can carry, in the processor's order (images, then videos, then audio clips)
VISUAL      media with pixels and a token grid (images, video tubelets)
PROMPT      what a prompt's rows can be: text and the media
MODALITIES  every token-map modality, in display order: the prompt's, then the generated tokens
"""

from __future__ import annotations

MEDIA = ("image", "video", "audio")
VISUAL = ("image", "video")
PROMPT = ("text", *MEDIA)
MODALITIES = (*PROMPT, "generated")
