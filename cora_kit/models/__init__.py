"""Model building blocks owned by the core: overlap head, panorama projector, PE, fusion."""
