"""Neural-network building blocks of cellvi's variational autoencoders."""

from ._classifier import Classifier
from ._decoder import DecoderSCVI
from ._embedding import Embedding
from ._encoder import Encoder
from ._fclayers import FCLayers
from ._gaussian_decoder import Decoder
from ._one_hot import one_hot

__all__ = ["Classifier", "Decoder", "DecoderSCVI", "Embedding", "Encoder", "FCLayers", "one_hot"]
