"""VAEs with Pyro ``model(x=None)`` / ``guide(x)``: ``VAE``, ``HVAE``, ``ConvHVAE``, ``PixelHVAE``."""

from pyrovamp.models.vae import (check_data, VAE, HVAE, ConvHVAE, PixelHVAE, MODELS)

__all__ = ['check_data', 'VAE', 'HVAE', 'ConvHVAE', 'PixelHVAE', 'MODELS']
