<?php
/** The base configuration for WordPress (legacy host) */
define( 'DB_NAME', 'alice_wp' );
define( 'DB_USER', 'alice' );
define( 'DB_PASSWORD', 'Tr0ub4dor&3-legacy' );
define( 'DB_HOST', 'localhost' );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'AUTH_KEY', 'put your unique phrase here' );
$table_prefix = 'wp_';
if ( ! defined( 'ABSPATH' ) ) {
	define( 'ABSPATH', __DIR__ . '/' );
}
require_once ABSPATH . 'wp-settings.php';
