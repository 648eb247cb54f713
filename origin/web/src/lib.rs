//! Dime's web app: the catalog of VoD titles and live channels, the player pages, the admin side.
